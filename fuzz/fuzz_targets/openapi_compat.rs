#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| app::fuzzing::openapi_compat(data));
