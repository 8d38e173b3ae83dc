//! Fuzz target: the pure core against its reference model. The input bytes seed a sequence
//! of operations (redemptions valid and not, online and offline, workshops, reversals,
//! cancellations, fundings, clock moves, sweeps, clearing runs, payments and rejections,
//! tablets retired and their requests forgotten, retries);
//! after each one the core's answer must be the model's, and every invariant of the money
//! and the passes must hold. No disk: decide + apply in memory.
#![no_main]
use libfuzzer_sys::fuzz_target;
use passnum::domain::*;

#[path = "../../tests/support/model.rs"]
mod model;
use model::*;

struct Core {
    state: State,
    rules: Rules,
}

impl Core {
    fn run(&mut self, now: i64, command: Command) -> Result<Outcome, Refusal> {
        let env = Envelope {
            request: None,
            command,
        };
        self.send(now, env)
    }

    fn send(&mut self, now: i64, env: Envelope) -> Result<Outcome, Refusal> {
        match decide(&self.state, &self.rules, Timestamp(now), &env) {
            Decision::Answer(a) => a,
            Decision::Record(body) => {
                assert!(body.postings_balance(), "postings balance");
                let seq = self.state.seq + 1;
                self.state.apply(seq, Timestamp(now), &body);
                body.result
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut core = Core {
        state: State::default(),
        rules: Rules::default(),
    };
    let mut m = Model::new();
    setup(&mut |now, c| core.run(now, c), m.now);
    for chunk in data.chunks(8).take(200) {
        let mut seed = [0u8; 8];
        seed[..chunk.len()].copy_from_slice(chunk);
        let op = match Lcg(u64::from_le_bytes(seed)).op() {
            // Restarts and storage faults are the simulation's: the core has no disk.
            Op::Restart { .. } => continue,
            Op::Faulted { inner, .. } => *inner,
            op => op,
        };
        if matches!(op, Op::Restart { .. } | Op::Faulted { .. }) {
            continue;
        }
        if let Op::Advance { hours } = op {
            m.now += hours * HOUR;
        }
        let env = envelope(&op, &m);
        let expected = m.step(&op);
        if let Some(env) = env {
            let answer = core.send(m.now, env);
            assert_eq!(reason(&answer), expected, "{op:?}");
        }
        core.state.check_invariants().unwrap();
        assert_eq!(core.state.requests.len(), m.remembered.len(), "remembered requests");
    }
});
