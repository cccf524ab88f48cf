//! A tiny command line over the crate, for trying files by hand:
//! `cargo run --example sopsctl -- decrypt FILE KEYS` or
//! `cargo run --example sopsctl -- encrypt FILE RECIPIENT`.
use std::path::Path;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [verb, file, key] = args.as_slice() else {
        eprintln!("usage: sopsctl (decrypt FILE KEYS_FILE | encrypt FILE RECIPIENT)");
        std::process::exit(2);
    };
    let format = strata_sops::Format::from_path(Path::new(file)).unwrap_or_else(|e| fail(&e));
    let input = std::fs::read(file).unwrap_or_else(|e| fail(&e));
    let output = match verb.as_str() {
        "decrypt" => {
            let keys = std::fs::read_to_string(key).unwrap_or_else(|e| fail(&e));
            let ids = strata_sops::Identities::parse(&keys).unwrap_or_else(|e| fail(&e));
            strata_sops::decrypt(&input, format, &ids).unwrap_or_else(|e| fail(&e)).as_bytes().to_vec()
        }
        "encrypt" => {
            strata_sops::encrypt(&input, format, &[key.as_str()], &Default::default()).unwrap_or_else(|e| fail(&e))
        }
        _ => fail(&"unknown verb"),
    };
    use std::io::Write;
    std::io::stdout().write_all(&output).unwrap();
}

fn fail(e: &dyn std::fmt::Display) -> ! {
    eprintln!("error: {e}");
    std::process::exit(1);
}
