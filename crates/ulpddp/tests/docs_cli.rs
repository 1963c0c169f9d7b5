//! Shell completions and man pages come from the command-line definition.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_ulpddp");

fn run(args: &[&str]) -> String {
    let out = Command::new(BIN).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn completions_know_the_commands_and_nvme_cli_flags() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let s = run(&["completions", shell]);
        for word in [
            "target",
            "discover",
            "id-ctrl",
            "trsvcid",
            "hostnqn",
            "output-format",
        ] {
            assert!(s.contains(word), "{shell} completion lacks {word}");
        }
    }
    assert!(
        !Command::new(BIN)
            .args(["completions", "tcsh"])
            .status()
            .unwrap()
            .success()
    );
}

#[test]
fn man_pages_cover_every_command() {
    let page = run(&["man"]);
    assert!(page.contains(".TH ulpddp 1"), "{page}");
    assert!(page.contains("target"));
    let dir = tempfile::tempdir().unwrap();
    run(&["man", "--out-dir", dir.path().to_str().unwrap()]);
    for name in [
        "ulpddp",
        "ulpddp-target",
        "ulpddp-connect",
        "ulpddp-read",
        "ulpddp-perf",
        "ulpddp-ddp-caps-get",
    ] {
        let p = dir.path().join(format!("{name}.1"));
        let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert!(text.contains(".SH NAME"), "{name}");
    }
    let target = std::fs::read_to_string(dir.path().join("ulpddp-target.1")).unwrap();
    assert!(
        target.contains("metrics") && target.contains("control\\-socket"),
        "{target}"
    );
}
