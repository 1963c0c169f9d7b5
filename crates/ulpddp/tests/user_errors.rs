//! A user error reads cleanly: `Error: ...` and its causes on stderr, each cause once, exit
//! status 1, no Rust backtrace even with RUST_BACKTRACE set, and no ANSI colour codes when
//! stderr is not a terminal. The commands run as a user runs them: the real binary against a
//! real target process, or against a plain TCP listener that is not NVMe/TCP.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Child, Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_ulpddp");
const NQN: &str = "nqn.2024-01.io.ulp-ddp:target";

/// A `ulpddp target` process on a free loopback port, killed on drop.
struct Target {
    child: Child,
    port: String,
    /// Its stdout, kept open: a target whose stdout is gone ends at its next line.
    _stdout: BufReader<std::process::ChildStdout>,
}

impl Target {
    fn start(ns: &str) -> Target {
        let mut child = Command::new(BIN)
            .args(["target", "--listen", "127.0.0.1:0", "--no-discovery-port"])
            .args(["--allow-any-host", "--ns", ns])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the target");
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        out.read_line(&mut line).expect("a line");
        let port = line
            .trim()
            .strip_prefix("listening on 127.0.0.1:")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        Target {
            child,
            port,
            _stdout: out,
        }
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs ulpddp with RUST_BACKTRACE=1 and stderr a pipe, `input` on stdin.
fn ulpddp(args: &[&str], input: &[u8]) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .env("RUST_BACKTRACE", "1")
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ulpddp");
    let mut stdin = child.stdin.take().expect("stdin");
    // A command that stops reading early closes the pipe: not an error here.
    let _ = stdin.write_all(input);
    drop(stdin);
    child.wait_with_output().expect("ulpddp output")
}

/// The error of a command that must fail: checks the shape every user error has and returns
/// stderr.
fn user_error(args: &[&str], input: &[u8]) -> String {
    let out = ulpddp(args, input);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
    assert_clean(&err);
    assert!(err.starts_with("Error: "), "{err}");
    err
}

/// No backtrace, no colour, and no line that only repeats (part of) the one before.
fn assert_clean(err: &str) {
    assert!(!err.to_lowercase().contains("backtrace"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(!err.contains('\x1b'), "ANSI escape in {err:?}");
    let lines: Vec<&str> = err.lines().map(|l| l.trim()).collect();
    for w in lines.windows(2) {
        let cause = w[1].strip_prefix("caused by: ").unwrap_or(w[1]);
        assert!(
            !w[0].contains(cause),
            "a cause repeats the line before: {err}"
        );
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

#[test]
fn a_refused_connection_is_one_clean_error_naming_the_address() {
    // A port that was free a moment ago and has nobody listening.
    let port = free_port().to_string();
    let err = user_error(
        &[
            "id-ctrl",
            "-a",
            "127.0.0.1",
            "--trsvcid",
            &port,
            "--nqn",
            NQN,
        ],
        b"",
    );
    assert_eq!(
        err.lines().next().unwrap(),
        format!("Error: connecting to {NQN} at 127.0.0.1:{port}")
    );
    let cause = err.lines().nth(1).unwrap();
    assert!(
        cause.starts_with(&format!(
            "  caused by: cannot connect to 127.0.0.1:{port}: Connection refused"
        )),
        "{err}"
    );
    assert_eq!(err.lines().count(), 2, "{err}");
}

/// A listener that accepts one connection, sends `reply` and holds the connection until the
/// peer closes it.
fn plain_tcp(reply: &'static [u8]) -> (u16, std::thread::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let t = std::thread::spawn(move || {
        if let Ok((mut s, _)) = l.accept() {
            let _ = s.write_all(reply);
            let mut sink = Vec::new();
            let _ = s.read_to_end(&mut sink);
        }
    });
    (port, t)
}

#[test]
fn a_port_that_does_not_speak_nvme_tcp_is_named_as_such() {
    let (port, t) = plain_tcp(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
    let port = port.to_string();
    let err = user_error(&["id-ctrl", "--trsvcid", &port, "--nqn", NQN], b"");
    t.join().unwrap();
    assert_eq!(
        err,
        format!(
            "Error: connecting to {NQN} at 127.0.0.1:{port}\n  caused by: protocol error: not an \
             NVMe/TCP port: the first bytes received, \"HTTP/1.1\", are not an ICResp (invalid \
             PDU-TYPE at offset 0: reserved PDU type 0x48)\n"
        )
    );
}

#[test]
fn the_connect_timeout_is_the_timeout_option() {
    // Accepts, then says nothing: the host waits for its ICResp as long as --timeout says
    // (by default it would wait 10 s and say so).
    let (port, t) = plain_tcp(b"");
    let port = port.to_string();
    let err = user_error(
        &[
            "id-ctrl",
            "--trsvcid",
            &port,
            "--nqn",
            NQN,
            "--timeout",
            "1",
        ],
        b"",
    );
    t.join().unwrap();
    assert_eq!(
        err,
        format!(
            "Error: connecting to {NQN} at 127.0.0.1:{port}\n  caused by: no ICResp within 1s\n"
        )
    );
}

#[test]
fn a_subsystem_the_target_does_not_serve_is_named_as_the_refused_parameter() {
    let t = Target::start("ram:1M");
    let err = user_error(
        &[
            "id-ctrl",
            "--trsvcid",
            &t.port,
            "--nqn",
            "nqn.2024-01.x:typo",
        ],
        b"",
    );
    assert_eq!(
        err,
        format!(
            "Error: connecting to nqn.2024-01.x:typo at 127.0.0.1:{}\n  caused by: Connect \
             rejected on queue 0: Connect Invalid Parameters (SCT 0x1 SC 0x82, do not retry): \
             refused the subsystem NQN (no such subsystem on this port, or not exported there)\n",
            t.port
        )
    );
}

#[test]
fn reads_are_checked_against_the_namespace_before_anything_is_allocated() {
    let t = Target::start("ram:1M");
    let c = ["--trsvcid", &t.port, "--nqn", NQN, "-d", "/dev/null"];
    let read = |extra: &[&str]| {
        let mut a = vec!["read"];
        a.extend_from_slice(&c);
        a.extend_from_slice(extra);
        user_error(&a, b"")
    };
    assert_eq!(read(&["-n", "2"]), "Error: namespace 2 not found\n");
    assert_eq!(
        read(&["-s", "2040", "-c", "15"]),
        "Error: invalid argument: blocks 2040..=2055 are beyond namespace 1, which has 2048 \
         blocks of 512 bytes\n"
    );
    // 100 TB: refused from the range, not by the allocator aborting the process.
    assert_eq!(
        read(&["-z", "100000000000000"]),
        "Error: invalid argument: blocks 0..=195312499999 are beyond namespace 1, which has \
         2048 blocks of 512 bytes\n"
    );
    assert_eq!(
        user_error(
            &[
                "id-ns",
                "--trsvcid",
                &t.port,
                "--nqn",
                NQN,
                "--namespace-id",
                "5"
            ],
            b""
        ),
        "Error: namespace 5 not found\n"
    );
}

#[test]
fn a_size_that_cannot_be_allocated_is_refused_with_a_clear_message() {
    // 32 TiB inside a 64 TiB namespace that stores nothing, under a 4 GB address space limit
    // (so the outcome does not depend on the machine's overcommit policy).
    let t = Target::start("null:64T");
    let out = Command::new("sh")
        .args(["-c", "ulimit -v 4000000 && exec \"$0\" \"$@\"", BIN, "read"])
        .args(["--trsvcid", &t.port, "--nqn", NQN, "-d", "/dev/null"])
        .args(["-z", &(32u64 << 40).to_string()])
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_clean(&err);
    assert_eq!(
        err,
        "Error: cannot allocate 35184372088832 bytes for the transfer: transfer a smaller range \
         at a time (--start-block, --block-count)\n"
    );
}

#[test]
fn write_reads_only_what_it_sends_and_refuses_a_short_source() {
    let t = Target::start("ram:1M");
    let c = ["--trsvcid", &t.port, "--nqn", NQN];
    let write = |extra: &[&str], input: &[u8]| {
        let mut a = vec!["write"];
        a.extend_from_slice(&c);
        a.extend_from_slice(extra);
        ulpddp(&a, input)
    };
    // Shorter than the transfer: refused, nothing written.
    let out = write(&["-c", "3"], &[0xAB; 1000]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "Error: the input has 1000 bytes, the transfer needs 2048\n"
    );
    // An endless source: the write reads the 512 bytes it sends. (Before, the whole file
    // was read first: /dev/zero until memory ran out, here at the 2 GB address space limit.)
    let out = Command::new("sh")
        .args([
            "-c",
            "ulimit -v 2000000 && exec \"$0\" \"$@\"",
            BIN,
            "write",
        ])
        .args(c)
        .args(["-s", "9", "-c", "0", "-d", "/dev/zero"])
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A larger file: only the first block is read and sent.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("in");
    std::fs::write(&file, [0xAB; 4096]).unwrap();
    let out = write(&["-s", "7", "-c", "0", "-d", file.to_str().unwrap()], b"");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A stream larger than the namespace without a size: refused, not buffered whole.
    let err = {
        let mut a = vec!["write"];
        a.extend_from_slice(&c);
        a.extend_from_slice(&["-s", "2000"]);
        user_error(&a, &[1; 48 * 512 + 1])
    };
    assert_eq!(
        err,
        "Error: the input is larger than the 24576 bytes from block 2000 to the end of \
         namespace 1: give --block-count or --data-size\n"
    );
    // The block the file's write sent is there, and only that one.
    let out = ulpddp(
        &[
            "read",
            "--trsvcid",
            &t.port,
            "--nqn",
            NQN,
            "-s",
            "6",
            "-c",
            "2",
        ],
        b"",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut want = vec![0u8; 3 * 512];
    want[512..1024].fill(0xAB);
    assert!(out.stdout == want, "blocks 6..=8 read back wrong");
}

#[test]
fn a_media_error_names_the_status_and_the_command() {
    // A file namespace whose file shrinks under the target: its reads fail on the medium.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ns.img");
    std::fs::write(&path, vec![0u8; 1 << 20]).unwrap();
    let t = Target::start(&format!("file:{}", path.display()));
    std::fs::File::options()
        .write(true)
        .open(&path)
        .and_then(|f| f.set_len(0))
        .unwrap();
    let err = user_error(
        &[
            "read",
            "--trsvcid",
            &t.port,
            "--nqn",
            NQN,
            "-s",
            "16",
            "-c",
            "7",
            "-d",
            "/dev/null",
        ],
        b"",
    );
    let (head, tail) = err
        .split_once(", CID 0x")
        .unwrap_or_else(|| panic!("no CID in {err}"));
    assert_eq!(head, "Error: Read (opcode 0x02)");
    // The CID is 4 hex digits; the rest is fixed.
    assert_eq!(
        &tail[4..],
        " on queue 1, namespace 1, LBA 16..=23 (8 blocks) failed: Unrecovered Read Error (SCT \
         0x2 SC 0x81, do not retry)\n",
        "{err}"
    );
}

#[test]
fn a_reader_that_stops_reading_ends_the_command_quietly() {
    // `ulpddp id-ctrl -o json | head -1`: the pipe's reader is gone before the output is
    // written. The command ends as by SIGPIPE, with no panic message and no backtrace.
    use std::os::unix::process::ExitStatusExt;
    let t = Target::start("ram:1M");
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(BIN)
        .args(["id-ctrl", "--trsvcid", &t.port, "--nqn", NQN, "-o", "json"])
        .env("RUST_BACKTRACE", "1")
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.signal(), Some(13), "{:?}: {err}", out.status);
    assert_eq!(err, "");
}

#[test]
fn logs_on_a_pipe_carry_no_colour_codes() {
    // The target logs each connection at INFO; its stderr is a pipe.
    let mut child = Command::new(BIN)
        .args(["target", "--listen", "127.0.0.1:0", "--no-discovery-port"])
        .args(["--allow-any-host", "--ns", "ram:1M"])
        .env("RUST_BACKTRACE", "1")
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    // Kept open until the end (see Target).
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    stdout.read_line(&mut line).unwrap();
    let port = line.trim().rsplit(':').next().unwrap().to_string();
    let out = ulpddp(&["id-ctrl", "--trsvcid", &port, "--nqn", NQN], b"");
    let _ = child.kill();
    drop(stdout);
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let _ = child.wait();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(err.contains(" INFO "), "INFO lines expected: {err}");
    assert!(!err.contains('\x1b'), "ANSI escape in {err:?}");
}

#[test]
fn interactive_read_counts_blocks_as_block_count_and_has_help() {
    let t = Target::start("ram:1M");
    let out = ulpddp(
        &[
            "connect",
            "--interactive",
            "--trsvcid",
            &t.port,
            "--nqn",
            NQN,
        ],
        b"help\nread 1 0 0\nread 1 0 7\nread 1 2047 1\nread 1 0 99999999999\nbogus\nquit\n",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        stdout.contains("  read NSID SLBA NLB    read NLB+1 blocks (0's based, as --block-count)"),
        "{stdout}"
    );
    // 0 is one block, 7 is eight (of zeroes).
    let reads: Vec<&str> = stdout.lines().filter(|l| l.starts_with("read ")).collect();
    let crc = nvme_tcp_wire::digest::crc32c;
    assert_eq!(
        reads,
        [
            format!("read 512 bytes, crc32c {:#010x}", crc(&[0; 512])),
            format!("read 4096 bytes, crc32c {:#010x}", crc(&[0; 4096]))
        ],
        "{stdout}"
    );
    assert_eq!(
        err,
        "error: invalid argument: blocks 2047..=2048 are beyond namespace 1, which has 2048 \
         blocks of 512 bytes\n\
         error: invalid argument: blocks 0..=99999999999 are beyond namespace 1, which has \
         2048 blocks of 512 bytes\n\
         error: unknown command \"bogus\" (`help` lists the commands)\n"
    );
}

#[test]
fn perf_refuses_sizes_the_controller_cannot_take_before_any_io() {
    let err = user_error(
        &[
            "perf",
            "--rw",
            "read",
            "--bs",
            "4m",
            "--runtime",
            "1",
            "--ns",
            "ram:16M",
        ],
        b"",
    );
    assert_eq!(
        err,
        "Error: --bs 4MiB is larger than one command can transfer on this controller (1MiB: \
         its maximum data transfer size, MDTS)\n"
    );
    assert_eq!(
        user_error(&["perf", "--size", "0"], b""),
        "Error: --size must be more than 0 bytes\n"
    );
    let out = ulpddp(&["perf", "--queues", "0"], b"");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.starts_with("error: invalid value '0' for '--queues <QUEUES>': 0 is not in 1..="),
        "{err}"
    );
}
