//! The NBD handshake (fixed newstyle negotiation), sans-IO: bytes from the client go in with
//! [`Handshake::feed`], bytes for the client come out of [`Handshake::tx_pending`], and
//! [`Handshake::outcome`] tells when the negotiation is over and how.
//!
//! Supported options: `EXPORT_NAME`, `ABORT`, `LIST`, `INFO`, `GO` (with `NBD_INFO_EXPORT`,
//! `NAME`, `DESCRIPTION`, `BLOCK_SIZE`) and `STRUCTURED_REPLY`; every other option is
//! answered `NBD_REP_ERR_UNSUP`. Option data beyond [`MAX_OPTION_DATA`] bytes is discarded
//! as it arrives and answered `NBD_REP_ERR_TOO_BIG`, so memory stays bounded whatever a
//! client sends. A client that does not speak fixed newstyle, or sets client flags this
//! server does not know, is refused.

use super::proto::{
    FLAG_C_FIXED_NEWSTYLE, FLAG_C_NO_ZEROES, FLAG_FIXED_NEWSTYLE, FLAG_NO_ZEROES, IHAVEOPT,
    NBDMAGIC, REPLY_MAGIC, info, opt, rep,
};

/// Option data kept in memory at most; longer options are discarded and refused.
pub const MAX_OPTION_DATA: u32 = 16 << 10;
/// Longest export name the protocol allows.
pub const MAX_NAME: usize = 4096;

/// What a client learns about an export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportInfo {
    /// The export's name.
    pub name: String,
    /// A human-readable description (may be empty).
    pub description: String,
    /// Size in bytes.
    pub size: u64,
    /// Transmission flags (`NBD_FLAG_*`).
    pub flags: u16,
    /// Minimum block size: requests must be aligned to it (the logical block size).
    pub min_block: u32,
    /// Preferred block size (the physical block size).
    pub preferred_block: u32,
    /// Maximum payload of one request.
    pub max_block: u32,
}

/// How the negotiation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Transmission starts on export `export` (an index into the list given to
    /// [`Handshake::new`]).
    Transmission {
        /// The chosen export.
        export: usize,
        /// Structured replies were negotiated.
        structured_replies: bool,
    },
    /// The client ended the negotiation (`NBD_OPT_ABORT`).
    Aborted,
}

/// A negotiation that cannot go on; the connection must be closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// The client does not speak fixed newstyle.
    #[error("client does not support fixed newstyle negotiation (client flags {0:#x})")]
    NotFixedNewstyle(u32),
    /// The client set flags this server does not know.
    #[error("unknown client flags {0:#x}")]
    UnknownClientFlags(u32),
    /// An option request did not start with `IHAVEOPT`.
    #[error("bad option magic {0:#018x}")]
    BadOptionMagic(u64),
    /// `NBD_OPT_EXPORT_NAME` named an export that does not exist (the protocol has no way to
    /// say so but closing).
    #[error("unknown export {0:?}")]
    UnknownExport(String),
    /// Data arrived after the negotiation ended.
    #[error("data after the end of the negotiation")]
    AfterEnd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    ClientFlags,
    OptionHeader,
    OptionData { option: u32, len: u32 },
    Discard { option: u32, left: u64 },
    Done,
}

/// The server side of the handshake.
#[derive(Debug)]
pub struct Handshake {
    exports: Vec<ExportInfo>,
    state: State,
    rx: Vec<u8>,
    tx: Vec<u8>,
    no_zeroes: bool,
    structured: bool,
    outcome: Option<Outcome>,
}

impl Handshake {
    /// A negotiation offering `exports`; the greeting is queued for sending.
    pub fn new(exports: Vec<ExportInfo>) -> Self {
        let mut tx = Vec::with_capacity(18);
        tx.extend_from_slice(&NBDMAGIC.to_be_bytes());
        tx.extend_from_slice(&IHAVEOPT.to_be_bytes());
        tx.extend_from_slice(&(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes());
        Self {
            exports,
            state: State::ClientFlags,
            rx: Vec::new(),
            tx,
            no_zeroes: false,
            structured: false,
            outcome: None,
        }
    }

    /// Bytes waiting to be sent to the client.
    pub fn tx_pending(&self) -> &[u8] {
        &self.tx
    }

    /// `n` bytes of [`Handshake::tx_pending`] were sent.
    pub fn tx_consumed(&mut self, n: usize) {
        self.tx.drain(..n.min(self.tx.len()));
    }

    /// The result, once the negotiation is over (send what is pending first).
    pub fn outcome(&self) -> Option<Outcome> {
        self.outcome
    }

    /// How many bytes the machine needs before it can make progress (at least 1), so a
    /// driver never reads past the end of the negotiation into transmission data.
    pub fn wants(&self) -> usize {
        let need = match self.state {
            State::ClientFlags => 4,
            State::OptionHeader => 16,
            State::OptionData { len, .. } => len as usize,
            State::Discard { left, .. } => return left.clamp(1, 64 << 10) as usize,
            State::Done => return 1,
        };
        need.saturating_sub(self.rx.len()).max(1)
    }

    /// Processes bytes from the client.
    pub fn feed(&mut self, mut data: &[u8]) -> Result<(), HandshakeError> {
        while !data.is_empty() {
            match self.state {
                State::Done => return Err(HandshakeError::AfterEnd),
                State::Discard { option, left } => {
                    let n = (left.min(data.len() as u64)) as usize;
                    data = &data[n..];
                    let left = left - n as u64;
                    if left == 0 {
                        self.reply(option, rep::ERR_TOO_BIG, b"option data too long");
                        self.state = State::OptionHeader;
                    } else {
                        self.state = State::Discard { option, left };
                    }
                }
                _ => {
                    let want = match self.state {
                        State::ClientFlags => 4,
                        State::OptionHeader => 16,
                        State::OptionData { len, .. } => len as usize,
                        _ => 0,
                    };
                    let n = want.saturating_sub(self.rx.len()).min(data.len());
                    self.rx.extend_from_slice(&data[..n]);
                    data = &data[n..];
                    if self.rx.len() == want {
                        self.step()?;
                    }
                }
            }
        }
        // An option with no data completes without further input.
        if let State::OptionData { len: 0, .. } = self.state {
            self.step()?;
        }
        Ok(())
    }

    /// Handles the complete unit in `rx`.
    fn step(&mut self) -> Result<(), HandshakeError> {
        let buf = std::mem::take(&mut self.rx);
        match self.state {
            State::ClientFlags => {
                let flags = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
                if flags & FLAG_C_FIXED_NEWSTYLE == 0 {
                    return Err(HandshakeError::NotFixedNewstyle(flags));
                }
                if flags & !(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES) != 0 {
                    return Err(HandshakeError::UnknownClientFlags(flags));
                }
                self.no_zeroes = flags & FLAG_C_NO_ZEROES != 0;
                self.state = State::OptionHeader;
            }
            State::OptionHeader => {
                let mut m = [0u8; 8];
                m.copy_from_slice(&buf[0..8]);
                let magic = u64::from_be_bytes(m);
                if magic != IHAVEOPT {
                    return Err(HandshakeError::BadOptionMagic(magic));
                }
                let option = u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]);
                let len = u32::from_be_bytes([buf[12], buf[13], buf[14], buf[15]]);
                self.state = if len > MAX_OPTION_DATA {
                    State::Discard {
                        option,
                        left: u64::from(len),
                    }
                } else {
                    State::OptionData { option, len }
                };
            }
            State::OptionData { option, .. } => {
                self.state = State::OptionHeader;
                self.option(option, &buf)?;
            }
            State::Discard { .. } | State::Done => {}
        }
        Ok(())
    }

    fn reply(&mut self, option: u32, kind: u32, data: &[u8]) {
        self.tx.extend_from_slice(&REPLY_MAGIC.to_be_bytes());
        self.tx.extend_from_slice(&option.to_be_bytes());
        self.tx.extend_from_slice(&kind.to_be_bytes());
        self.tx
            .extend_from_slice(&(data.len() as u32).to_be_bytes());
        self.tx.extend_from_slice(data);
    }

    fn find(&self, name: &[u8]) -> Option<usize> {
        if name.is_empty() {
            // The empty name is the default export: the first.
            return (!self.exports.is_empty()).then_some(0);
        }
        self.exports.iter().position(|e| e.name.as_bytes() == name)
    }

    fn option(&mut self, option: u32, data: &[u8]) -> Result<(), HandshakeError> {
        match option {
            opt::EXPORT_NAME => {
                let Some(i) = self.find(data) else {
                    self.state = State::Done;
                    return Err(HandshakeError::UnknownExport(
                        String::from_utf8_lossy(data).into_owned(),
                    ));
                };
                let e = &self.exports[i];
                let (size, flags) = (e.size, e.flags);
                self.tx.extend_from_slice(&size.to_be_bytes());
                self.tx.extend_from_slice(&flags.to_be_bytes());
                if !self.no_zeroes {
                    self.tx.extend_from_slice(&[0u8; 124]);
                }
                self.finish(Outcome::Transmission {
                    export: i,
                    structured_replies: self.structured,
                });
            }
            opt::ABORT => {
                self.reply(option, rep::ACK, &[]);
                self.finish(Outcome::Aborted);
            }
            opt::LIST => {
                if !data.is_empty() {
                    self.reply(option, rep::ERR_INVALID, b"NBD_OPT_LIST takes no data");
                    return Ok(());
                }
                let names: Vec<Vec<u8>> = self
                    .exports
                    .iter()
                    .map(|e| e.name.clone().into_bytes())
                    .collect();
                for n in names {
                    let mut d = Vec::with_capacity(4 + n.len());
                    d.extend_from_slice(&(n.len() as u32).to_be_bytes());
                    d.extend_from_slice(&n);
                    self.reply(option, rep::SERVER, &d);
                }
                self.reply(option, rep::ACK, &[]);
            }
            opt::INFO | opt::GO => self.info_or_go(option, data),
            opt::STRUCTURED_REPLY => {
                if !data.is_empty() {
                    self.reply(
                        option,
                        rep::ERR_INVALID,
                        b"NBD_OPT_STRUCTURED_REPLY takes no data",
                    );
                } else if self.structured {
                    self.reply(
                        option,
                        rep::ERR_INVALID,
                        b"structured replies already negotiated",
                    );
                } else {
                    self.structured = true;
                    self.reply(option, rep::ACK, &[]);
                }
            }
            opt::STARTTLS => self.reply(option, rep::ERR_UNSUP, b"TLS is not supported"),
            _ => self.reply(option, rep::ERR_UNSUP, b"option not supported"),
        }
        Ok(())
    }

    fn info_or_go(&mut self, option: u32, data: &[u8]) {
        // u32 name length, name, u16 number of requests, u16 each.
        let parsed = (|| {
            let nlen = u32::from_be_bytes(data.get(0..4)?.try_into().ok()?) as usize;
            if nlen > MAX_NAME {
                return None;
            }
            let name = data.get(4..4 + nlen)?;
            let rest = data.get(4 + nlen..)?;
            let n = u16::from_be_bytes(rest.get(0..2)?.try_into().ok()?) as usize;
            let reqs = rest.get(2..)?;
            if reqs.len() != 2 * n {
                return None;
            }
            let reqs: Vec<u16> = reqs
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            Some((name.to_vec(), reqs))
        })();
        let Some((name, reqs)) = parsed else {
            self.reply(option, rep::ERR_INVALID, b"malformed NBD_OPT_INFO/GO data");
            return;
        };
        let Some(i) = self.find(&name) else {
            self.reply(option, rep::ERR_UNKNOWN, b"no such export");
            return;
        };
        let e = self.exports[i].clone();
        let mut d = Vec::with_capacity(12);
        d.extend_from_slice(&info::EXPORT.to_be_bytes());
        d.extend_from_slice(&e.size.to_be_bytes());
        d.extend_from_slice(&e.flags.to_be_bytes());
        self.reply(option, rep::INFO, &d);
        if reqs.contains(&info::NAME) {
            let mut d = info::NAME.to_be_bytes().to_vec();
            d.extend_from_slice(e.name.as_bytes());
            self.reply(option, rep::INFO, &d);
        }
        if reqs.contains(&info::DESCRIPTION) && !e.description.is_empty() {
            let mut d = info::DESCRIPTION.to_be_bytes().to_vec();
            d.extend_from_slice(e.description.as_bytes());
            self.reply(option, rep::INFO, &d);
        }
        // Block sizes are sent whether asked for or not: requests must be aligned to whole
        // logical blocks.
        let mut d = info::BLOCK_SIZE.to_be_bytes().to_vec();
        d.extend_from_slice(&e.min_block.to_be_bytes());
        d.extend_from_slice(&e.preferred_block.to_be_bytes());
        d.extend_from_slice(&e.max_block.to_be_bytes());
        self.reply(option, rep::INFO, &d);
        self.reply(option, rep::ACK, &[]);
        if option == opt::GO {
            self.finish(Outcome::Transmission {
                export: i,
                structured_replies: self.structured,
            });
        }
    }

    fn finish(&mut self, o: Outcome) {
        self.state = State::Done;
        self.outcome = Some(o);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn export(name: &str) -> ExportInfo {
        ExportInfo {
            name: name.into(),
            description: "a disk".into(),
            size: 1 << 30,
            flags: 0x0d,
            min_block: 512,
            preferred_block: 4096,
            max_block: 1 << 20,
        }
    }

    fn option(o: u32, data: &[u8]) -> Vec<u8> {
        let mut v = IHAVEOPT.to_be_bytes().to_vec();
        v.extend_from_slice(&o.to_be_bytes());
        v.extend_from_slice(&(data.len() as u32).to_be_bytes());
        v.extend_from_slice(data);
        v
    }

    fn go_data(name: &str, reqs: &[u16]) -> Vec<u8> {
        let mut d = (name.len() as u32).to_be_bytes().to_vec();
        d.extend_from_slice(name.as_bytes());
        d.extend_from_slice(&(reqs.len() as u16).to_be_bytes());
        for r in reqs {
            d.extend_from_slice(&r.to_be_bytes());
        }
        d
    }

    /// Splits option replies: (option, type, data).
    fn replies(mut b: &[u8]) -> Vec<(u32, u32, Vec<u8>)> {
        let mut out = Vec::new();
        while b.len() >= 20 {
            assert_eq!(&b[0..8], &REPLY_MAGIC.to_be_bytes());
            let o = u32::from_be_bytes(b[8..12].try_into().unwrap());
            let t = u32::from_be_bytes(b[12..16].try_into().unwrap());
            let l = u32::from_be_bytes(b[16..20].try_into().unwrap()) as usize;
            out.push((o, t, b[20..20 + l].to_vec()));
            b = &b[20 + l..];
        }
        assert!(b.is_empty());
        out
    }

    fn started(exports: Vec<ExportInfo>, client_flags: u32) -> Handshake {
        let mut h = Handshake::new(exports);
        assert_eq!(h.tx_pending().len(), 18);
        assert_eq!(&h.tx_pending()[16..], &[0, 3]);
        h.tx_consumed(18);
        h.feed(&client_flags.to_be_bytes()).unwrap();
        h
    }

    #[test]
    fn go_describes_the_export_with_block_sizes_then_enters_transmission() {
        let mut h = started(vec![export("a"), export("b")], 3);
        h.feed(&option(opt::STRUCTURED_REPLY, &[])).unwrap();
        h.feed(&option(
            opt::GO,
            &go_data("b", &[info::NAME, info::BLOCK_SIZE]),
        ))
        .unwrap();
        let r = replies(h.tx_pending());
        assert_eq!(r[0], (opt::STRUCTURED_REPLY, rep::ACK, vec![]));
        assert_eq!(r[1].1, rep::INFO);
        assert_eq!(
            r[1].2,
            [&[0u8, 0][..], &(1u64 << 30).to_be_bytes(), &[0, 0x0d]].concat()
        );
        assert_eq!(r[2].2, b"\x00\x01b");
        assert_eq!(
            r[3].2,
            [0, 3, 0, 0, 2, 0, 0, 0, 16, 0, 0, 16, 0, 0],
            "min 512, preferred 4096, max 1 MiB"
        );
        assert_eq!(r[4], (opt::GO, rep::ACK, vec![]));
        assert_eq!(
            h.outcome(),
            Some(Outcome::Transmission {
                export: 1,
                structured_replies: true
            })
        );
        assert_eq!(h.feed(&[0]), Err(HandshakeError::AfterEnd));
    }

    #[test]
    fn unknown_export_and_malformed_go_get_errors_and_negotiation_goes_on() {
        let mut h = started(vec![export("a")], 1);
        h.feed(&option(opt::GO, &go_data("zz", &[]))).unwrap();
        let mut bad = go_data("a", &[1]);
        bad.pop();
        h.feed(&option(opt::INFO, &bad)).unwrap();
        h.feed(&option(99, b"x")).unwrap();
        h.feed(&option(opt::INFO, &go_data("", &[]))).unwrap();
        let r = replies(h.tx_pending());
        assert_eq!(r[0].1, rep::ERR_UNKNOWN);
        assert_eq!(r[1].1, rep::ERR_INVALID);
        assert_eq!(r[2].1, rep::ERR_UNSUP);
        assert_eq!(r[3].1, rep::INFO, "the empty name is the default export");
        assert_eq!(h.outcome(), None);
    }

    #[test]
    fn export_name_sends_size_flags_and_padding_unless_no_zeroes() {
        for (flags, len) in [(1u32, 8 + 2 + 124), (3, 10)] {
            let mut h = started(vec![export("disk")], flags);
            h.feed(&option(opt::EXPORT_NAME, b"disk")).unwrap();
            assert_eq!(h.tx_pending().len(), len);
            assert_eq!(&h.tx_pending()[..8], &(1u64 << 30).to_be_bytes());
            assert!(matches!(
                h.outcome(),
                Some(Outcome::Transmission { export: 0, .. })
            ));
        }
        let mut h = started(vec![export("disk")], 1);
        assert_eq!(
            h.feed(&option(opt::EXPORT_NAME, b"nope")),
            Err(HandshakeError::UnknownExport("nope".into()))
        );
    }

    #[test]
    fn list_then_abort() {
        let mut h = started(vec![export("a"), export("bb")], 1);
        h.feed(&option(opt::LIST, &[])).unwrap();
        h.feed(&option(opt::ABORT, &[])).unwrap();
        let r = replies(h.tx_pending());
        assert_eq!(r[0], (opt::LIST, rep::SERVER, b"\0\0\0\x01a".to_vec()));
        assert_eq!(r[1], (opt::LIST, rep::SERVER, b"\0\0\0\x02bb".to_vec()));
        assert_eq!(r[2], (opt::LIST, rep::ACK, vec![]));
        assert_eq!(r[3], (opt::ABORT, rep::ACK, vec![]));
        assert_eq!(h.outcome(), Some(Outcome::Aborted));
    }

    #[test]
    fn refuses_old_style_clients_and_unknown_flags_and_bad_magic() {
        let mut h = Handshake::new(vec![export("a")]);
        assert_eq!(
            h.feed(&0u32.to_be_bytes()),
            Err(HandshakeError::NotFixedNewstyle(0))
        );
        let mut h = Handshake::new(vec![export("a")]);
        assert_eq!(
            h.feed(&5u32.to_be_bytes()),
            Err(HandshakeError::UnknownClientFlags(5))
        );
        let mut h = started(vec![export("a")], 1);
        assert_eq!(h.feed(&[0u8; 16]), Err(HandshakeError::BadOptionMagic(0)));
    }

    #[test]
    fn oversized_option_is_discarded_then_refused() {
        let mut h = started(vec![export("a")], 1);
        let big = vec![7u8; MAX_OPTION_DATA as usize + 1];
        h.feed(&option(opt::INFO, &big)).unwrap();
        assert!(h.rx.capacity() <= 64, "discarded data is not buffered");
        let r = replies(h.tx_pending());
        assert_eq!(r[0].1, rep::ERR_TOO_BIG);
        h.feed(&option(opt::GO, &go_data("a", &[]))).unwrap();
        assert!(h.outcome().is_some());
    }

    proptest! {
        /// Any bytes, in any split: no panic, bounded buffers, and the same result as when
        /// fed in one piece.
        #[test]
        fn arbitrary_input_never_panics_and_splitting_does_not_matter(
            input in proptest::collection::vec(any::<u8>(), 0..400),
            cut in 0usize..400,
        ) {
            let mut whole = Handshake::new(vec![export("a")]);
            let r1 = whole.feed(&input);
            let mut split = Handshake::new(vec![export("a")]);
            let cut = cut.min(input.len());
            let r2 = split.feed(&input[..cut]).and_then(|_| split.feed(&input[cut..]));
            prop_assert_eq!(r1.is_ok(), r2.is_ok());
            prop_assert_eq!(whole.tx_pending(), split.tx_pending());
            prop_assert_eq!(whole.outcome(), split.outcome());
            prop_assert!(whole.rx.len() <= MAX_OPTION_DATA as usize);
        }

        /// Well-formed option sequences with random options and data always end in replies
        /// that parse, one or more per option.
        #[test]
        fn every_option_gets_a_reply(
            opts in proptest::collection::vec((0u32..16, proptest::collection::vec(any::<u8>(), 0..40)), 1..8),
        ) {
            let mut h = started(vec![export("a")], 3);
            let mut sent = 0;
            for (o, d) in &opts {
                if *o == opt::EXPORT_NAME || h.outcome().is_some() {
                    break;
                }
                h.feed(&option(*o, d)).unwrap();
                sent += 1;
            }
            let r = replies(h.tx_pending());
            prop_assert!(r.len() >= sent);
        }
    }
}
