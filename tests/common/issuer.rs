//! A plain-`http://` JWKS endpoint that stalls chosen requests: checks held in flight the way
//! production holds one (an unknown `kid` waiting for its issuer's refetch).

use std::io::{Read, Write};

/// Serves `jwks` to every request but those `stalls(index)` picks (0 is the first, the fetch
/// at start), which are accepted and never answered. Returns the issuer's URL.
pub fn stalling_issuer(jwks: String, stalls: fn(usize) -> bool) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for (index, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.read(&mut [0u8; 4096]);
            if stalls(index) {
                held.push(stream);
            } else {
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{jwks}",
                    jwks.len()
                );
            }
        }
    });
    url
}
