//! The host over real loopback sockets against a scripted controller (`support`): data round
//! trips with and without digests, in-capsule and R2T writes, and the recovery paths (data
//! digest error, protocol violation, lost connection, command timeout, controller restart).
//!
//! No test depends on timing for its verdict: waits are bounded only to turn a hang into a
//! failure.

mod support;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use nvme_tcp_host::{
    CidMode, ConnectOptions, Controller, GiveUpReason, IoBuf, IoError, IoQueue, ProtocolError,
};
use support::{LBA, Misbehave, Mock, NQN};

fn opts(m: &Mock) -> ConnectOptions {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let mut o = ConnectOptions::new("127.0.0.1", m.port(), NQN);
    o.kato = None;
    o.reconnect_delay = Duration::from_millis(50);
    o.ctrl_loss_tmo = Some(Duration::from_secs(60));
    o.command_timeout = Duration::from_secs(60);
    o
}

fn pattern(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2654435761).wrapping_add(seed) >> 13) as u8)
        .collect()
}

/// Waits (bounded) until `f` holds.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < until, "gave up waiting for: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn one_queue(ctrl: &mut Controller) -> IoQueue {
    let mut qs = ctrl.take_io_queues();
    assert!(!qs.is_empty());
    qs.swap_remove(0)
}

fn read_blocks(q: &mut IoQueue, slba: u64, nlb: u32, ud: u64) -> nvme_tcp_host::Completion {
    q.submit_read(1, slba, nlb, IoBuf::Contig(vec![0; nlb as usize * LBA]), ud)
        .expect("submit");
    q.wait_for(ud).expect("completion")
}

fn expected(m: &Mock, slba: u64, nlb: u32) -> Vec<u8> {
    let ns = m.ns.lock().unwrap();
    ns[slba as usize * LBA..(slba as usize + nlb as usize) * LBA].to_vec()
}

#[test]
fn writes_and_reads_back_over_several_queues_with_every_digest_setting() {
    for (h, d, sqflow_off) in [
        (false, false, false),
        (true, true, false),
        (false, true, true),
    ] {
        let m = Mock::start(4096, 4096);
        let mut o = opts(&m);
        o.hdgst = h;
        o.ddgst = d;
        o.disable_sqflow = sqflow_off;
        o.nr_io_queues = 3;
        let ctrl = Controller::connect(o).expect("connect");
        assert_eq!(ctrl.io_queue_count(), 3);
        let ns = ctrl.namespace(1).expect("identify ns");
        assert_eq!((ns.nsze, ns.lba_size), (4096, 512));
        assert_eq!(ctrl.active_namespaces().unwrap(), vec![1]);
        // 1 MiB: chunks of MDTS (128 KiB) go through R2T + H2CData split at MAXH2CDATA.
        let data = pattern(1 << 20, 7);
        ctrl.write_at(&ns, 100, &data).expect("write");
        let mut back = vec![0u8; data.len()];
        ctrl.read_at(&ns, 100, &mut back).expect("read");
        assert!(back == data, "digests h={h} d={d}: data differs");
        assert!(m.counters.r2ts.load(Ordering::Relaxed) >= 8);
        // A small write fits in the capsule.
        let r2ts = m.counters.r2ts.load(Ordering::Relaxed);
        ctrl.write_at(&ns, 0, &data[..2048]).expect("small write");
        assert_eq!(m.counters.r2ts.load(Ordering::Relaxed), r2ts);
        ctrl.shutdown();
    }
}

#[test]
fn scatter_gather_read_lands_in_every_segment() {
    let m = Mock::start(64, 4096);
    let mut ctrl = Controller::connect(opts(&m)).unwrap();
    let mut q = one_queue(&mut ctrl);
    let buf = IoBuf::Sgl(vec![vec![0; 700], vec![0; 1000], vec![0; 348]]);
    q.submit_read(1, 3, 4, buf, 1).unwrap();
    let c = q.wait_for(1).unwrap();
    assert!(c.result.is_ok());
    assert_eq!(c.buf.unwrap().to_vec(), expected(&m, 3, 4));
}

#[test]
fn data_digest_error_fails_only_that_read_and_keeps_the_queue() {
    let m = Mock::start(64, 4096);
    let mut o = opts(&m);
    o.ddgst = true;
    let mut ctrl = Controller::connect(o).unwrap();
    let mut q = one_queue(&mut ctrl);
    m.faults.corrupt_ddgst.store(true, Ordering::Relaxed);
    let c = read_blocks(&mut q, 0, 8, 1);
    // The mock sends the read as two PDUs and corrupts the first one's digest.
    let e = c.result.unwrap_err();
    assert!(
        matches!(
            e,
            IoError::DataDigest {
                datao: 0,
                datal: 2048,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(
        e.to_string().starts_with(
            "data digest mismatch in the C2HData PDU at DATAO 0 (DATAL 2048): received 0x"
        ),
        "{e}"
    );
    let c = read_blocks(&mut q, 0, 8, 2);
    assert!(c.result.is_ok());
    assert_eq!(c.buf.unwrap().to_vec(), expected(&m, 0, 8));
    assert_eq!(q.stats().reconnects, 0, "the queue stayed up");
    assert_eq!(m.counters.io_connects.load(Ordering::Relaxed), 1);
}

#[test]
fn out_of_range_datao_fails_the_read_and_reconnects_the_queue() {
    let m = Mock::start(64, 4096);
    let mut ctrl = Controller::connect(opts(&m)).unwrap();
    let mut q = one_queue(&mut ctrl);
    m.faults.bad_datao.store(true, Ordering::Relaxed);
    let c = read_blocks(&mut q, 0, 8, 1);
    assert!(
        matches!(c.result, Err(IoError::Protocol(_))),
        "{:?}",
        c.result
    );
    let c = read_blocks(&mut q, 8, 8, 2);
    assert!(c.result.is_ok(), "{:?}", c.result);
    assert_eq!(c.buf.unwrap().to_vec(), expected(&m, 8, 8));
    assert_eq!(
        m.counters.io_connects.load(Ordering::Relaxed),
        2,
        "reconnected once"
    );
}

#[test]
fn a_read_in_flight_when_the_connection_drops_is_reissued() {
    let m = Mock::start(64, 4096);
    let mut ctrl = Controller::connect(opts(&m)).unwrap();
    let mut q = one_queue(&mut ctrl);
    m.faults.drop_on_read.store(true, Ordering::Relaxed);
    let c = read_blocks(&mut q, 16, 4, 9);
    assert!(c.result.is_ok(), "{:?}", c.result);
    assert_eq!(c.buf.unwrap().to_vec(), expected(&m, 16, 4));
    assert_eq!(m.counters.reads.load(Ordering::Relaxed), 2, "sent twice");
    assert_eq!(q.stats().reconnects, 1);
}

#[test]
fn fast_io_fail_tmo_fails_io_while_the_target_is_down() {
    let m = Mock::start(64, 4096);
    let mut o = opts(&m);
    o.fast_io_fail_tmo = Some(Duration::ZERO);
    let mut ctrl = Controller::connect(o).unwrap();
    let mut q = one_queue(&mut ctrl);
    m.faults.refuse.store(true, Ordering::Relaxed);
    m.faults.drop_on_read.store(true, Ordering::Relaxed);
    let c = read_blocks(&mut q, 0, 1, 1);
    // The read was in flight when the connection closed: the host names that as the cause.
    assert!(
        matches!(
            &c.result,
            Err(IoError::GaveUp { reason: GiveUpReason::FastIoFail, last, .. })
                if **last == IoError::Protocol(ProtocolError::Closed)
        ),
        "{:?}",
        c.result
    );
    // The target comes back: the queue reconnects and works again. (Until it has
    // reconnected, a new command fails at once: fast_io_fail_tmo has expired.)
    m.faults.refuse.store(false, Ordering::Relaxed);
    eventually("the queue reconnects", || {
        q.poll(Duration::from_millis(10)).expect("not given up");
        q.is_connected()
    });
    let c = read_blocks(&mut q, 0, 1, 2);
    assert!(c.result.is_ok(), "{:?}", c.result);
}

#[test]
fn after_fast_io_fail_tmo_a_command_submitted_while_still_down_fails_at_once() {
    let m = Mock::start(64, 4096);
    let mut o = opts(&m);
    o.fast_io_fail_tmo = Some(Duration::ZERO);
    let mut ctrl = Controller::connect(o).unwrap();
    let mut q = one_queue(&mut ctrl);
    m.faults.refuse.store(true, Ordering::Relaxed);
    m.faults.drop_on_read.store(true, Ordering::Relaxed);
    let c = read_blocks(&mut q, 0, 1, 1);
    assert!(
        matches!(
            &c.result,
            Err(IoError::GaveUp {
                reason: GiveUpReason::FastIoFail,
                ..
            })
        ),
        "{:?}",
        c.result
    );
    // Still down (every reconnect refused): the next command does not wait for one; it
    // completes at once, before any poll, with the outage's cause.
    q.submit_read(1, 0, 1, IoBuf::Contig(vec![0; LBA]), 2)
        .expect("submit");
    let c = q.pop_completion().expect("completed at submission");
    assert_eq!(c.user_data, 2);
    assert!(c.buf.is_some(), "its buffer comes back");
    assert!(
        matches!(
            &c.result,
            Err(IoError::GaveUp { attempts: 0, reason: GiveUpReason::FastIoFail, last })
                if **last == IoError::Protocol(ProtocolError::Closed)
        ),
        "{:?}",
        c.result
    );
    assert_eq!(m.counters.reads.load(Ordering::Relaxed), 1, "never sent");
    // Once the queue is back, commands are sent again.
    m.faults.refuse.store(false, Ordering::Relaxed);
    eventually("the queue reconnects", || {
        q.poll(Duration::from_millis(10)).expect("not given up");
        q.is_connected()
    });
    let c = read_blocks(&mut q, 0, 1, 3);
    assert!(c.result.is_ok(), "{:?}", c.result);
}

#[test]
fn a_command_whose_timeout_passes_while_the_queue_is_down_fails_without_an_abort() {
    let m = Mock::start(64, 4096);
    let mut o = opts(&m);
    o.command_timeout = Duration::from_millis(300);
    let mut ctrl = Controller::connect(o).unwrap();
    let mut q = one_queue(&mut ctrl);
    m.faults.refuse.store(true, Ordering::Relaxed);
    m.faults.drop_on_read.store(true, Ordering::Relaxed);
    q.submit_read(1, 0, 1, IoBuf::Contig(vec![0; LBA]), 1)
        .unwrap();
    // The target stays down (ctrl_loss_tmo is 60 s): the read fails by its own timeout.
    let mut got = None;
    eventually("the read fails while the queue is down", || {
        q.poll(Duration::from_millis(10)).expect("not given up");
        got = q.pop_completion();
        got.is_some()
    });
    let c = got.unwrap();
    assert!(!q.is_connected(), "still down");
    assert!(
        matches!(
            &c.result,
            Err(IoError::GaveUp { attempts: 1, reason: GiveUpReason::CommandTimeout, last })
                if **last == IoError::Protocol(ProtocolError::Closed)
        ),
        "{:?}",
        c.result
    );
    // Back up: the failed read is neither re-sent nor aborted.
    m.faults.refuse.store(false, Ordering::Relaxed);
    let c = read_blocks(&mut q, 0, 1, 2);
    assert!(c.result.is_ok(), "{:?}", c.result);
    assert_eq!(m.counters.reads.load(Ordering::Relaxed), 2);
    assert_eq!(m.counters.aborts.load(Ordering::Relaxed), 0);
}

#[test]
fn ctrl_loss_tmo_gives_up_and_fails_io() {
    let m = Mock::start(64, 4096);
    let mut o = opts(&m);
    o.ctrl_loss_tmo = Some(Duration::ZERO);
    let mut ctrl = Controller::connect(o).unwrap();
    let mut q = one_queue(&mut ctrl);
    m.faults.drop_on_read.store(true, Ordering::Relaxed);
    q.submit_read(1, 0, 1, IoBuf::Contig(vec![0; LBA]), 1)
        .unwrap();
    let mut got = None;
    for _ in 0..1000 {
        match q.poll(Duration::from_millis(20)) {
            Ok(_) => {
                if let Some(c) = q.pop_completion() {
                    got = Some(c);
                    break;
                }
            }
            Err(_) => break,
        }
    }
    let c = got
        .or_else(|| q.pop_completion())
        .expect("the read completes");
    assert!(
        matches!(
            &c.result,
            Err(IoError::GaveUp { reason: GiveUpReason::CtrlLoss, last, .. })
                if **last == IoError::Protocol(ProtocolError::Closed)
        ),
        "{:?}",
        c.result
    );
    assert!(q.poll(Duration::ZERO).is_err(), "the queue is dead");
}

#[test]
fn a_command_that_never_completes_is_aborted_then_the_queue_reset() {
    let m = Mock::start(64, 4096);
    let mut o = opts(&m);
    o.command_timeout = Duration::from_millis(200);
    let mut ctrl = Controller::connect(o).unwrap();
    let mut q = one_queue(&mut ctrl);
    m.faults.swallow_read.store(true, Ordering::Relaxed);
    let c = read_blocks(&mut q, 0, 1, 1);
    let e = c.result.unwrap_err();
    assert_eq!(
        e,
        IoError::Timeout {
            after: Duration::from_millis(200)
        }
    );
    assert_eq!(
        e.to_string(),
        "no completion within 200ms (the command timeout), nor for its Abort"
    );
    assert!(
        m.counters.aborts.load(Ordering::Relaxed) >= 1,
        "Abort was sent first"
    );
    // The queue works again. (On a very busy machine a read may itself exceed the short
    // timeout; that is retried, only another outcome fails the test.)
    let mut ok = false;
    for ud in 2..40 {
        let c = read_blocks(&mut q, 0, 1, ud);
        match c.result {
            Ok(_) => {
                ok = true;
                break;
            }
            Err(IoError::Timeout { .. }) => continue,
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert!(ok, "the queue recovered");
}

/// While one call re-establishes the association (its admin connection was lost and the
/// controller refuses connections), an I/O queue that lost its connection too keeps running
/// its own reconnect timers instead of waiting behind that call (up to `ctrl_loss_tmo`), and
/// another admin command waits for that call rather than starting a second reconnect; once
/// the controller is back, the read waiting on the queue completes.
#[test]
fn an_io_queue_does_not_wait_for_the_admin_queue_to_reconnect() {
    let m = Mock::start(64, 4096);
    let mut o = opts(&m);
    o.reconnect_delay = Duration::from_millis(100);
    let mut ctrl = Controller::connect(o).unwrap();
    let mut q = one_queue(&mut ctrl);
    let ctrl = std::sync::Arc::new(ctrl);
    m.faults.refuse.store(true, Ordering::SeqCst);
    m.restart();
    // The command sent on the closed connection fails; the host learns the loss.
    eventually("the admin connection is found lost", || {
        ctrl.identify_controller().is_err()
    });
    let c = ctrl.clone();
    let first = std::thread::spawn(move || c.identify_controller());
    eventually("the first call is reconnecting", || {
        m.counters.refused.load(Ordering::SeqCst) > 0
    });
    let c = ctrl.clone();
    let second = std::thread::spawn(move || c.identify_controller());
    // The queue's connection is gone as well: a read waits for its reconnect, and polling
    // returns on time (on a thread, so that a regression fails the test instead of hanging).
    q.submit_read(1, 0, 1, IoBuf::Contig(vec![0; LBA]), 7)
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let poller = std::thread::spawn(move || {
        for _ in 0..5 {
            let t = Instant::now();
            let r = q.poll(Duration::from_millis(20));
            let _ = tx.send((t.elapsed(), r.is_ok()));
        }
        q
    });
    for _ in 0..5 {
        let (took, ok) = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the I/O queue waited for the admin queue's reconnect");
        assert!(ok && took < Duration::from_secs(5), "{took:?} {ok}");
    }
    let mut q = poller.join().unwrap();
    assert!(!first.is_finished() && !second.is_finished());
    // The controller comes back: the first call re-establishes the association and runs,
    // the second after it, and the queue reconnects and completes the read.
    m.faults.refuse.store(false, Ordering::SeqCst);
    assert_eq!(
        first.join().unwrap().expect("the reconnecting call").len(),
        4096
    );
    assert_eq!(
        second.join().unwrap().expect("the waiting call").len(),
        4096
    );
    let c = q.wait_for(7).expect("completion");
    assert!(c.result.is_ok(), "{:?}", c.result);
    assert_eq!(
        m.counters.admin_connects.load(Ordering::SeqCst),
        2,
        "one reconnect"
    );
}

#[test]
fn keep_alive_goes_out_periodically() {
    let m = Mock::start(64, 4096);
    let mut o = opts(&m);
    o.kato = Some(Duration::from_millis(200));
    let ctrl = Controller::connect(o).unwrap();
    eventually("two Keep Alive commands", || {
        m.counters.keep_alives.load(Ordering::Relaxed) >= 2
    });
    ctrl.shutdown();
}

#[test]
fn controller_restart_reassociates_and_reissues() {
    let m = Mock::start(64, 4096);
    let mut o = opts(&m);
    o.cid_mode = CidMode::Linear;
    let mut ctrl = Controller::connect(o).unwrap();
    let mut q = one_queue(&mut ctrl);
    let first_cntlid = ctrl.info().unwrap().cntlid;
    let data = pattern(4 * LBA, 3);
    q.submit_write(1, 20, 4, IoBuf::Contig(data.clone()), 1)
        .unwrap();
    assert!(q.wait_for(1).unwrap().result.is_ok());
    m.restart();
    // The next read finds the connection closed, reconnects, has its I/O Connect refused
    // (unknown controller), re-establishes the association and re-issues the read.
    let c = read_blocks(&mut q, 20, 4, 2);
    assert!(c.result.is_ok(), "{:?}", c.result);
    assert_eq!(c.buf.unwrap().to_vec(), data);
    assert_ne!(ctrl.info().unwrap().cntlid, first_cntlid, "new association");
    assert!(m.counters.admin_connects.load(Ordering::Relaxed) >= 2);
}

#[test]
fn many_commands_in_flight_complete_with_their_own_buffers() {
    let m = Mock::start(1024, 4096);
    let mut o = opts(&m);
    o.queue_size = 32;
    o.ddgst = true;
    let mut ctrl = Controller::connect(o).unwrap();
    let mut q = one_queue(&mut ctrl);
    assert_eq!(q.depth(), 31);
    let mut next = 0u64;
    let mut done = 0;
    while done < 500 {
        while next < 500 && q.in_flight() < q.depth() {
            let slba = (next * 7) % 1000;
            q.submit_read(1, slba, 2, IoBuf::Contig(vec![0; 2 * LBA]), next)
                .unwrap();
            next += 1;
        }
        q.poll(Duration::from_millis(100)).unwrap();
        while let Some(c) = q.pop_completion() {
            let slba = (c.user_data * 7) % 1000;
            assert!(c.result.is_ok());
            assert_eq!(c.buf.unwrap().to_vec(), expected(&m, slba, 2));
            done += 1;
        }
    }
}

#[test]
fn an_offload_device_sees_the_whole_socket_lifecycle_on_a_real_connection() {
    use std::sync::Arc;
    use ulp_ddp::UlpDdpDevice;
    let m = Mock::start(64, 4096);
    let dev = ddp_engine::SoftDdpDevice::new(ddp_engine::EngineConfig {
        io_threshold: LBA as u32,
        ..Default::default()
    });
    let mut o = opts(&m);
    o.ddp_device = Some(nvme_tcp_host::options::DdpDeviceRef(Arc::new(dev.clone())));
    let mut ctrl = Controller::connect(o).unwrap();
    let mut q = one_queue(&mut ctrl);
    assert!(q.is_offloaded());
    assert_eq!(
        dev.get_stats().rx_nvme_tcp_sk_add,
        1,
        "the I/O queue only, not the admin queue"
    );
    q.submit_read(1, 0, 2, IoBuf::Contig(vec![0; 2 * LBA]), 1)
        .unwrap();
    let c = q.wait_for(1).unwrap();
    assert!(c.result.is_ok());
    assert_eq!(c.buf.unwrap().to_vec(), expected(&m, 0, 2));
    // Writes are not set up (nothing is received into their buffers).
    q.submit_write(1, 0, 1, IoBuf::Contig(vec![0; LBA]), 2)
        .unwrap();
    assert!(q.wait_for(2).unwrap().result.is_ok());
    let st = dev.get_stats();
    assert_eq!((st.rx_nvme_tcp_setup, st.rx_nvme_tcp_teardown), (1, 1));
    q.close();
    let st = dev.get_stats();
    assert_eq!((st.rx_nvme_tcp_sk_add, st.rx_nvme_tcp_sk_del), (1, 1));
}

/// What `ulpddp perf` does with the commands a target left unanswered at the end of a run:
/// closing the queue fails them and drops their buffers, without waiting for the controller,
/// also when the buffers are lent to an offload device.
#[test]
fn closing_a_queue_with_commands_in_flight_drops_them_without_waiting() {
    use std::sync::Arc;
    use ulp_ddp::UlpDdpDevice;
    for offload in [false, true] {
        let m = Mock::start(64, 4096);
        let dev = ddp_engine::SoftDdpDevice::new(ddp_engine::EngineConfig {
            io_threshold: LBA as u32,
            ..Default::default()
        });
        let mut o = opts(&m);
        if offload {
            o.ddp_device = Some(nvme_tcp_host::options::DdpDeviceRef(Arc::new(dev.clone())));
        }
        let mut ctrl = Controller::connect(o).unwrap();
        let mut q = one_queue(&mut ctrl);
        assert_eq!(q.is_offloaded(), offload);
        m.faults.swallow_reads.store(true, Ordering::SeqCst);
        for ud in 0..4u64 {
            q.submit_read(1, ud * 2, 2, IoBuf::Contig(vec![0; 2 * LBA]), ud)
                .unwrap();
        }
        eventually("the controller holds the four reads", || {
            q.poll(Duration::from_millis(10)).unwrap();
            m.counters.swallowed.load(Ordering::SeqCst) == 4
        });
        assert_eq!(q.in_flight(), 4);
        assert!(q.pop_completion().is_none());
        q.close();
        if offload {
            let st = dev.get_stats();
            assert_eq!(
                st.rx_nvme_tcp_setup, 4,
                "the reads' buffers were lent to the device"
            );
            assert_eq!(st.rx_nvme_tcp_sk_del, 1);
        }
        // The association is unaffected: the controller shuts down as usual.
        ctrl.shutdown();
    }
}

/// Polls until the command `ud` completes, failing the test if the controller saw the command
/// more than `max_sends` times (the host re-sent it past its retry limit) or, to turn a hang
/// into a failure, after a minute.
fn complete_within_sends(
    q: &mut IoQueue,
    ud: u64,
    sends: impl Fn() -> usize,
    max_sends: usize,
) -> nvme_tcp_host::Completion {
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(c) = q.pop_completion() {
            assert_eq!(c.user_data, ud);
            return c;
        }
        assert!(
            sends() <= max_sends,
            "sent {} times, more than {max_sends}",
            sends()
        );
        assert!(Instant::now() < until, "no completion");
        q.poll(Duration::from_millis(20)).expect("poll");
    }
}

/// What the host must name as the cause of the command's failure, per misbehaviour.
fn expected_cause(m: Misbehave, e: &ProtocolError) -> bool {
    let text = e.to_string();
    match m {
        Misbehave::UnknownCccid => {
            matches!(e, ProtocolError::UnknownCccid { pdu: "C2HData", .. })
        }
        Misbehave::R2tUnknownCccid => matches!(e, ProtocolError::UnknownCccid { pdu: "R2T", .. }),
        Misbehave::BadHeaderDigest => {
            matches!(e, ProtocolError::Header(_)) && text.contains("digest")
        }
        Misbehave::WrongHlen => matches!(e, ProtocolError::Header(_)) && text.contains("HLEN"),
        Misbehave::MisalignedPdo => matches!(e, ProtocolError::Header(_)) && text.contains("PDO"),
        Misbehave::UnknownCid => matches!(e, ProtocolError::UnknownCid { .. }),
        Misbehave::TermReqMidStream => matches!(e, ProtocolError::TermReq { fes: 1, .. }),
        Misbehave::CloseMidStream => *e == ProtocolError::Closed,
    }
}

#[test]
fn a_controller_that_misbehaves_on_every_command_makes_it_fail_after_the_retry_limit() {
    for mode in Misbehave::ALL {
        let m = Mock::start(1024, 4096);
        let mut o = opts(&m);
        o.reconnect_delay = Duration::from_millis(2);
        o.hdgst = mode == Misbehave::BadHeaderDigest;
        o.max_retries = 3;
        let mut ctrl = Controller::connect(o).unwrap();
        let mut q = one_queue(&mut ctrl);
        m.misbehave(Some(mode));
        // A Read (a Write larger than the in-capsule size for the R2T case).
        if mode == Misbehave::R2tUnknownCccid {
            q.submit_write(1, 0, 32, IoBuf::Contig(pattern(32 * LBA, 1)), 1)
                .unwrap();
        } else {
            q.submit_read(1, 0, 16, IoBuf::Contig(vec![0; 16 * LBA]), 1)
                .unwrap();
        }
        let misbehaved = || m.counters.misbehaved.load(Ordering::SeqCst);
        let c = complete_within_sends(&mut q, 1, misbehaved, 4);
        match &c.result {
            Err(IoError::GaveUp {
                attempts: 4,
                reason: GiveUpReason::RetryLimit,
                last,
            }) => match &**last {
                IoError::Protocol(e) => assert!(expected_cause(mode, e), "{mode:?}: {e}"),
                other => panic!("{mode:?}: cause {other}"),
            },
            other => panic!("{mode:?}: {other:?}"),
        }
        // Sent once, re-sent max_retries times; every connection it was sent on was broken.
        assert_eq!(misbehaved(), 4, "{mode:?}");
        assert_eq!(m.counters.io_connects.load(Ordering::SeqCst), 4, "{mode:?}");
        assert!(c.buf.is_some(), "{mode:?}: the buffer comes back");
        // The controller behaves again: so does the queue.
        m.misbehave(None);
        let c = read_blocks(&mut q, 8, 8, 2);
        assert!(c.result.is_ok(), "{mode:?}: {:?}", c.result);
        assert_eq!(c.buf.unwrap().to_vec(), expected(&m, 8, 8));
    }
}

#[test]
fn errors_that_name_no_command_count_against_every_command_in_flight() {
    let m = Mock::start(1024, 4096);
    let mut o = opts(&m);
    o.reconnect_delay = Duration::from_millis(2);
    o.max_retries = 2;
    let mut ctrl = Controller::connect(o).unwrap();
    let mut q = one_queue(&mut ctrl);
    m.misbehave(Some(Misbehave::TermReqMidStream));
    for ud in 0..4 {
        q.submit_read(1, ud * 8, 8, IoBuf::Contig(vec![0; 8 * LBA]), ud)
            .unwrap();
    }
    // Each connection breaks at the first Read it answers; the other three were in flight
    // on it too, so every Read uses up its 3 attempts within 3 connections.
    let until = Instant::now() + Duration::from_secs(60);
    let mut done = Vec::new();
    while done.len() < 4 {
        assert!(Instant::now() < until, "no completion");
        assert!(m.counters.io_connects.load(Ordering::SeqCst) <= 3);
        q.poll(Duration::from_millis(20)).unwrap();
        done.extend(std::iter::from_fn(|| q.pop_completion()));
    }
    for c in &done {
        assert!(
            matches!(
                &c.result,
                Err(IoError::GaveUp { attempts: 3, reason: GiveUpReason::RetryLimit, last })
                    if matches!(**last, IoError::Protocol(ProtocolError::TermReq { .. }))
            ),
            "{:?}",
            c.result
        );
    }
    assert_eq!(m.counters.io_connects.load(Ordering::SeqCst), 3);
}

#[test]
fn ctrl_loss_tmo_expires_although_every_reconnect_succeeds() {
    // Every TCP connect and Fabrics Connect succeeds, every re-sent Read breaks its
    // connection: the outage lasts until a command completes, so ctrl_loss_tmo (about 10
    // reconnect delays) ends it long before the (huge) retry limit would.
    let m = Mock::start(64, 4096);
    let mut o = opts(&m);
    o.reconnect_delay = Duration::from_millis(20);
    o.ctrl_loss_tmo = Some(Duration::from_millis(200));
    o.max_retries = 1000;
    let mut ctrl = Controller::connect(o).unwrap();
    let mut q = one_queue(&mut ctrl);
    m.misbehave(Some(Misbehave::UnknownCid));
    q.submit_read(1, 0, 8, IoBuf::Contig(vec![0; 8 * LBA]), 1)
        .unwrap();
    let misbehaved = || m.counters.misbehaved.load(Ordering::SeqCst);
    let until = Instant::now() + Duration::from_secs(60);
    let c = loop {
        if let Some(c) = q.pop_completion() {
            break c;
        }
        assert!(misbehaved() < 1000, "the outage never ended");
        assert!(Instant::now() < until, "no completion");
        let _ = q.poll(Duration::from_millis(20));
    };
    assert!(
        matches!(
            &c.result,
            Err(IoError::GaveUp { reason: GiveUpReason::CtrlLoss, last, .. })
                if matches!(**last, IoError::Protocol(ProtocolError::UnknownCid { .. }))
        ),
        "{:?}",
        c.result
    );
    assert!(misbehaved() >= 2, "it was re-sent on a new connection");
    assert!(q.poll(Duration::ZERO).is_err(), "the queue is given up");
}
