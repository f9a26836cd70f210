//! What counting costs on a send: ractor's plain `cast` against `Counted::send` (registry
//! lookup by actor id, two atomic adds) and against counting through a held probe (what the
//! publish path does for client deliveries). The receiving actor counts its `handled` side in
//! both cases, so the difference is the sender's cost.

use std::sync::Arc;
use std::time::Duration;

use beamq_supervisors::probe::{self, Counted, Describe, Probe, Registration, Summary};
use criterion::{Criterion, criterion_group, criterion_main};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

enum Msg {
    Tick,
    Describe(RpcReplyPort<Summary>),
}

impl ractor::Message for Msg {}

impl Describe for Msg {
    fn describe(reply: RpcReplyPort<Summary>) -> Self {
        Msg::Describe(reply)
    }
}

struct Sink;

impl Actor for Sink {
    type Msg = Msg;
    type State = (Arc<Probe>, Registration);
    type Arguments = ();

    async fn pre_start(
        &self,
        myself: ActorRef<Msg>,
        _: (),
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(probe::start(&myself, "sink"))
    }

    async fn handle(
        &self,
        _: ActorRef<Msg>,
        msg: Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.0.handled();
        if let Msg::Describe(r) = msg {
            let _ = r.send(Vec::new());
        }
        Ok(())
    }
}

fn sends(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let (actor, _) = rt.block_on(Actor::spawn(None, Sink, ())).expect("spawned");
    // Other registered actors, so that the lookup is not into a one-entry map.
    let _others: Vec<_> = (0..10_000)
        .map(|_| rt.block_on(Actor::spawn(None, Sink, ())).expect("spawned"))
        .collect();
    let held = probe::lookup(actor.get_id()).expect("registered");
    let mut g = c.benchmark_group("send");
    g.measurement_time(Duration::from_secs(3));
    g.bench_function("ractor cast", |b| {
        b.iter(|| actor.cast(Msg::Tick).expect("cast"))
    });
    g.bench_function("counted send (registry lookup)", |b| {
        b.iter(|| actor.send(Msg::Tick).expect("send"))
    });
    g.bench_function("counted through a held probe", |b| {
        b.iter(|| {
            held.probe().sent(1);
            actor.cast(Msg::Tick).expect("cast")
        })
    });
    g.finish();
}

criterion_group!(benches, sends);
criterion_main!(benches);
