#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| actguard::fuzzing::fleet_entries(data));
