//! The second thread of a run, which runs partition 1 (see the notes of
//! the `sim` module).

use std::{
    sync::{
        mpsc::{sync_channel, Receiver, SyncSender},
        Arc,
    },
    thread::Scope,
};

use super::{partition::Partition, world::World};

/// A thread that runs partition 1's ms while the simulator's thread runs
/// partition 0's. It lives as long as the run (a thread per ms would cost
/// tens of µs each, and start with a cold allocator cache); the partition
/// and the world travel to it and back by bounded channels.
pub(super) struct Worker<'a> {
    jobs: SyncSender<(Partition, Arc<World<'a>>, u64)>,
    done: Receiver<Partition>,
}

impl<'a> Worker<'a> {
    /// Starts the thread in `scope`; it ends when the worker is dropped.
    pub(super) fn spawn<'scope>(scope: &'scope Scope<'scope, '_>) -> Self
    where
        'a: 'scope,
    {
        let (jobs, inbox) = sync_channel::<(Partition, Arc<World<'a>>, u64)>(1);
        let (outbox, done) = sync_channel(1);
        scope.spawn(move || {
            for (mut part, world, now) in inbox {
                part.run_ms(&world, now);
                // Let go of the world first: the serial phase changes it
                // once the partition is back.
                drop(world);
                if outbox.send(part).is_err() {
                    break;
                }
            }
        });
        Worker { jobs, done }
    }

    pub(super) fn start(&self, part: Partition, world: Arc<World<'a>>, now: u64) {
        self.jobs
            .send((part, world, now))
            .expect("the worker runs until dropped (or panicked)");
    }

    pub(super) fn finish(&self) -> Partition {
        self.done
            .recv()
            .expect("the worker runs until dropped (or panicked)")
    }
}
