#![no_main]

libfuzzer_sys::fuzz_target!(
    |data: &[u8]| app::modules::auth::routes::fuzzing::request_bodies(data)
);
