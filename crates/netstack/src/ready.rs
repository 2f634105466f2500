//! Which flows need attention.
//!
//! Each flow has its own [`Waker`]. It is registered with the flow's host socket (tokio) and
//! with its smoltcp socket (smoltcp's `async` feature), so whichever side makes progress, waking
//! it puts the flow's id on the [`ReadyQueue`] once and wakes the stack's task. The stack then
//! services only the flows on the queue instead of polling every flow on every wake.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Wake, Waker};

use futures::task::AtomicWaker;

pub(crate) type FlowId = u64;

/// Flow ids woken since the stack last looked, and the stack task's waker.
#[derive(Default)]
pub(crate) struct ReadyQueue {
    ids: Mutex<Vec<FlowId>>,
    task: AtomicWaker,
}

impl ReadyQueue {
    /// Records the stack task's current waker (called at the top of every poll).
    pub(crate) fn register(&self, waker: &Waker) {
        self.task.register(waker);
    }

    /// Takes the ids woken so far, leaving `into` with them (and reusing its allocation).
    pub(crate) fn drain_into(&self, into: &mut Vec<FlowId>) {
        let mut ids = self.ids.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::swap(&mut *ids, into);
        ids.clear();
    }

    fn push(&self, id: FlowId) {
        self.ids.lock().unwrap_or_else(|e| e.into_inner()).push(id);
        self.task.wake();
    }
}

/// The waker of one flow. `queued` keeps a flow on the queue at most once.
pub(crate) struct FlowWaker {
    id: FlowId,
    queued: AtomicBool,
    queue: Arc<ReadyQueue>,
}

impl FlowWaker {
    pub(crate) fn new(id: FlowId, queue: &Arc<ReadyQueue>) -> Arc<FlowWaker> {
        Arc::new(FlowWaker {
            id,
            queued: AtomicBool::new(false),
            queue: Arc::clone(queue),
        })
    }

    /// Called by the stack before it services the flow: a wake from now on queues it again.
    pub(crate) fn clear(&self) {
        self.queued.store(false, Ordering::Release);
    }
}

impl Wake for FlowWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.queued.swap(true, Ordering::AcqRel) {
            self.queue.push(self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_flow_is_queued_once_until_cleared() {
        let queue = Arc::new(ReadyQueue::default());
        let a = FlowWaker::new(1, &queue);
        let b = FlowWaker::new(2, &queue);
        let wa = Waker::from(Arc::clone(&a));
        let wb = Waker::from(Arc::clone(&b));
        wa.wake_by_ref();
        wa.wake_by_ref();
        wb.wake_by_ref();
        let mut ids = Vec::new();
        queue.drain_into(&mut ids);
        assert_eq!(ids, vec![1, 2]);
        wa.wake_by_ref();
        queue.drain_into(&mut ids);
        assert!(ids.is_empty());
        a.clear();
        wa.wake_by_ref();
        queue.drain_into(&mut ids);
        assert_eq!(ids, vec![1]);
    }
}
