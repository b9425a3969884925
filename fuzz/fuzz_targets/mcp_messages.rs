#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| actguard::fuzzing::mcp_messages(data));
