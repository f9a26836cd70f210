//! # beamq-supervisors: OTP supervision on ractor
//!
//! ractor gives actors, links and supervision *events*, but no supervisor behaviour: its default
//! `handle_supervisor_evt` stops the parent when any child exits, and there are no restart
//! strategies, no restart intensity and no ordered shutdown. This crate adds them, with Erlang/OTP's
//! semantics, so that beamq's supervision tree can be written as data. It knows nothing of MQTT.
//!
//! ## What it implements
//!
//! - **Restart types** ([`Restart`]): `Permanent` children are always restarted, `Transient` ones
//!   only after an abnormal exit, `Temporary` ones never (they are dropped from the child list).
//!   Normal exits are defined by [`is_normal_exit`]: no reason, `"normal"`, `"shutdown"`,
//!   `"shutdown:..."` and ractor's `"Drained"`. A panic or `Err` in any handler is abnormal, and so
//!   is `"killed"`.
//! - **Strategies** ([`Strategy`]): `OneForOne` restarts the exited child; `OneForAll` stops the
//!   others in reverse order and restarts all in order; `RestForOne` stops the children started
//!   after it in reverse order and restarts it and them in order.
//! - **Restart intensity** ([`Intensity`], default 3 in 5 s): more restarts than that within the
//!   period and the supervisor stops all its children in reverse order and fails with
//!   [`SupervisorError::IntensityExceeded`], so its parent sees `ActorFailed` and applies its own
//!   strategy (escalation). A child that fails to start during a restart is retried at once, and
//!   each retry counts as a restart.
//! - **Ordered start, reverse stop**: children start in order in the supervisor's `pre_start` (a
//!   failure stops those already started, in reverse, and fails the supervisor's start); whenever a
//!   supervisor stops, for whatever reason but a kill, it stops its children last-first, each with a
//!   graceful stop and a kill after its [`ChildSpec::shutdown`] grace.
//! - **Dynamic children** ([`DynamicSupervisor`], OTP's `simple_one_for_one`): huge numbers of
//!   temporary children that callers spawn themselves, linked, with no message round trip; exits are
//!   counted and logged, never restarted, and never stop the supervisor.
//! - **Inspection**: [`SupervisorMsg::Inspect`] and [`DynamicSupervisorMsg::Inspect`] report the
//!   live tree; [`SupervisorStats`] / [`DynamicSupervisorStats`] are atomics readable without a
//!   message, shared by all incarnations of a supervisor started from one spec.
//!
//! ## ractor facts this design rests on (ractor 0.16)
//!
//! - A panic or `Err` in `post_start`, `handle`, `handle_supervisor_evt` or `post_stop` reaches the
//!   supervisor as `ActorFailed`; `post_stop` does not run after a failure or a kill.
//! - A panic or `Err` in `pre_start` makes `spawn`/`spawn_linked` return `Err`; no event is sent.
//! - `stop` is handled between messages and never interrupts a running handler; `kill` cancels the
//!   handler at its next `.await` and skips `post_stop`.
//! - When an actor's task ends (any reason), ractor *kills* all its descendants, unordered and
//!   without `post_stop`, and unlinks them so no events are sent. That is why supervisors here
//!   stop their children themselves, in order, before they end.
//!
//! ## Example tree
//!
//! ```no_run
//! use std::time::Duration;
//! use beamq_supervisors::{
//!     ChildSpec, DynamicSupervisorSpec, Restart, Strategy, SupervisorSpec, shutdown,
//!     start_supervisor,
//! };
//! use ractor::{Actor, ActorProcessingErr, ActorRef, Message};
//!
//! #[derive(Clone)]
//! struct Router;
//! struct RouterMsg;
//! impl Message for RouterMsg {} // needed: ractor's `cluster` feature is on
//! impl Actor for Router {
//!     type Msg = RouterMsg;
//!     type State = ();
//!     type Arguments = u32;
//!     async fn pre_start(&self, _: ActorRef<RouterMsg>, _shard: u32) -> Result<(), ActorProcessingErr> {
//!         Ok(())
//!     }
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! // beamq (one_for_all)
//! // ├ router_sup (one_for_one): router-0, router-1
//! // └ session_sup (dynamic): one temporary child per client
//! let router_sup = SupervisorSpec::new(Strategy::OneForOne)
//!     .with_name("router_sup")
//!     .child(ChildSpec::actor("router-0", Restart::Permanent, Router, 0))
//!     .child(ChildSpec::worker("router-1", Restart::Permanent, |sup| async move {
//!         Actor::spawn_linked(None, Router, 1, sup).await
//!     }));
//! let sessions = DynamicSupervisorSpec::new().with_name("session_sup").with_max_children(19_000);
//! let root = SupervisorSpec::new(Strategy::OneForAll)
//!     .with_name("beamq")
//!     .with_intensity(3, Duration::from_secs(5))
//!     .child(ChildSpec::supervisor("router_sup", router_sup))
//!     .child(ChildSpec::dynamic_supervisor("session_sup", sessions.clone()));
//! let root_stats = root.stats();
//!
//! let (root_ref, _join) = start_supervisor(root, None).await?;
//! // On the connect path: no message to the supervisor.
//! if let Some(session_sup) = sessions.handle_by_name() {
//!     let _client = session_sup.spawn_child(None, Router, 7).await?;
//! }
//! println!("restarts so far: {}", root_stats.restarts());
//! shutdown(&root_ref).await; // session_sup's children, then router-1, router-0
//! # Ok(())
//! # }
//! ```

mod dynamic;
mod error;
mod intensity;
pub mod probe;
mod shutdown;
mod spec;
mod stats;
mod supervisor;

pub use dynamic::{
    DynamicSupervisor, DynamicSupervisorHandle, DynamicSupervisorMsg, DynamicSupervisorReport,
    DynamicSupervisorSpec, DynamicSupervisorState, start_dynamic_supervisor,
};
pub use error::SupervisorError;
pub use shutdown::{shutdown, shutdown_within};
pub use spec::{
    ChildKind, ChildSpec, DEFAULT_SUPERVISOR_SHUTDOWN, DEFAULT_WORKER_SHUTDOWN, Intensity,
    IntoChildCell, Restart, SHUTDOWN_REASON, StartFn, StartFuture, Strategy, SupervisorSpec,
    is_normal_exit,
};
pub use stats::{
    DynamicSupervisorStats, DynamicSupervisorStatsSnapshot, SupervisorStats,
    SupervisorStatsSnapshot,
};
pub use supervisor::{
    ChildReport, ChildStatus, Supervisor, SupervisorMsg, SupervisorReport, SupervisorState,
    inspect, restart_child, start_child, start_supervisor, terminate_child, which_child,
};
