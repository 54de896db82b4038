#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tokenmint_fuzz::oauth_form(data));
