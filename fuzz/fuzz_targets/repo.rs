#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    strata::fuzzing::let_strata_catch_panics();
    strata::fuzzing::repo(data)
});
