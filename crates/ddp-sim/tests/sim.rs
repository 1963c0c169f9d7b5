//! Host + engine + target over the simulated network: data integrity under every fault
//! kind and the acceptance criteria of blktests nvme/055.

use ddp_sim::{FaultConfig, SimParams, SimReport, WireConfig, run_sim_read_workload};

fn params(seed: u64, faults: FaultConfig) -> SimParams {
    SimParams {
        wire: WireConfig {
            seed,
            faults,
            ..WireConfig::default()
        },
        ..SimParams::default()
    }
}

fn run(p: &SimParams) -> SimReport {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    match run_sim_read_workload(p) {
        Ok(r) => r,
        Err(e) => panic!("simulation failed: {e}"),
    }
}

#[test]
fn clean_wire_smoke() {
    let r = run(&params(1, FaultConfig::NONE));
    eprintln!("{r:#?}");
    assert_eq!(r.reads, 64);
    assert_eq!(r.bad_data, 0);
    assert_eq!(r.read_errors, 0);
}
