#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| psremote::fuzzing::proxy_http(data));
