//! Which session runs which image: the dispatch rule of the worker pool, on its own, with no
//! threads, locks or ONNX Runtime in it (the pool in `pool.rs` keeps one [`Queue`] under a mutex).
//!
//! With several single-threaded pool sessions, the lead worker also has a *solo* session that
//! runs one image on every core. An image that arrives while nothing else is queued or running
//! runs there; images that queue up go to the pool, which runs several at once. The two never run
//! at the same time (their threads would oversubscribe the cores). Until two pool sessions are
//! built, the solo session takes every image. Measurements behind the rule: docs/performance.md.

use std::collections::VecDeque;

/// The kind of session an image ran on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionKind {
    /// The solo session: all vCPUs on one image.
    Solo,
    /// A pool session: one image per core.
    Pool,
}

struct Queued<J> {
    job: J,
    /// Queued while nothing was queued or running: a lone image, not part of a batch or of
    /// concurrent requests.
    arrived_idle: bool,
}

/// The images waiting, and what the sessions are doing.
pub struct Queue<J> {
    jobs: VecDeque<Queued<J>>,
    /// Whether there is a solo session.
    pub solo_ready: bool,
    solo_busy: bool,
    /// Pool sessions built so far.
    pub pool_ready: usize,
    pool_busy: usize,
    /// The pool should be built now: an image was answered, or images queue up behind the solo
    /// session.
    pub pool_wanted: bool,
}

impl<J> Default for Queue<J> {
    fn default() -> Self {
        Self {
            jobs: VecDeque::new(),
            solo_ready: false,
            solo_busy: false,
            pool_ready: 0,
            pool_busy: 0,
            pool_wanted: false,
        }
    }
}

impl<J> Queue<J> {
    /// Queues an image.
    pub fn push(&mut self, job: J) {
        let arrived_idle = self.jobs.is_empty() && !self.solo_busy && self.pool_busy == 0;
        self.jobs.push_back(Queued { job, arrived_idle });
        self.pool_wanted |= self.solo_busy;
    }

    /// The next image for a worker that has a solo session (`solo`) and/or a pool session
    /// (`pool`), if one may start now, and the session it runs on.
    pub fn take(&mut self, solo: bool, pool: bool) -> Option<(J, SessionKind)> {
        if self.jobs.is_empty() || self.solo_busy {
            return None;
        }
        // An image that waited behind another is concurrent traffic: the pool's, once it is built.
        let alone = self.jobs.len() == 1 && self.pool_busy == 0 && self.jobs.front().is_some_and(|j| j.arrived_idle);
        // With a solo session, a pool of fewer than two sessions is no faster than it.
        let pool_useful = self.pool_ready >= 2 || !self.solo_ready;
        let kind = if solo && self.pool_busy == 0 && (alone || !pool_useful) {
            SessionKind::Solo
        } else if pool && pool_useful && !(alone && self.solo_ready) {
            SessionKind::Pool
        } else {
            return None;
        };
        let queued = self.jobs.pop_front()?;
        match kind {
            SessionKind::Solo => self.solo_busy = true,
            SessionKind::Pool => self.pool_busy += 1,
        }
        Some((queued.job, kind))
    }

    /// A session of `kind` finished its image.
    pub fn done(&mut self, kind: SessionKind) {
        self.pool_wanted = true;
        match kind {
            SessionKind::Solo => self.solo_busy = false,
            SessionKind::Pool => self.pool_busy = self.pool_busy.saturating_sub(1),
        }
    }

    /// Everything still queued (when the pool stops).
    pub fn drain(&mut self) -> Vec<J> {
        self.jobs.drain(..).map(|q| q.job).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use SessionKind::{Pool, Solo};

    /// `queued` images, of which only the first arrived to an idle detector.
    fn queue(queued: usize, solo_ready: bool, pool_ready: usize) -> Queue<usize> {
        let mut q = Queue { solo_ready, pool_ready, ..Queue::default() };
        for i in 0..queued {
            q.jobs.push_back(Queued { job: i, arrived_idle: i == 0 });
        }
        q
    }

    fn kind(taken: Option<(usize, SessionKind)>) -> Option<SessionKind> {
        taken.map(|(_, k)| k)
    }

    #[test]
    fn a_lone_image_runs_on_the_solo_session() {
        let mut q = queue(1, true, 2);
        assert_eq!(kind(q.take(false, true)), None, "a pool worker leaves it to the lead");
        assert_eq!(kind(q.take(true, true)), Some(Solo));
        assert!(q.solo_busy);
    }

    #[test]
    fn queued_images_go_to_the_pool_never_beside_the_solo_session() {
        let mut q = queue(3, true, 2);
        assert_eq!(kind(q.take(true, true)), Some(Pool));
        assert_eq!(kind(q.take(false, true)), Some(Pool));
        assert_eq!(q.pool_busy, 2);
        // One left while the pool runs: it stays in the pool, not on the solo session.
        assert_eq!(kind(q.take(true, true)), Some(Pool));

        let mut q = queue(2, true, 2);
        q.solo_busy = true;
        assert_eq!(kind(q.take(false, true)), None, "nothing starts beside the solo session");
    }

    #[test]
    fn an_image_that_waited_behind_the_solo_session_goes_to_the_pool() {
        let mut q = queue(2, true, 2);
        assert_eq!(kind(q.take(true, true)), Some(Pool), "two queued: the pool's");
        q.pool_busy = 0;
        // The second one is alone now, but it arrived while the first was queued.
        assert_eq!(kind(q.take(false, true)), Some(Pool));

        let mut q = Queue { solo_ready: true, pool_ready: 2, ..Queue::default() };
        q.push(1);
        assert_eq!(kind(q.take(true, true)), Some(Solo), "arrived idle");
        q.push(2);
        assert!(q.pool_wanted, "queued behind the solo session: build the pool");
        q.done(Solo);
        assert_eq!(kind(q.take(true, true)), Some(Pool), "arrived while busy");
    }

    #[test]
    fn until_two_pool_sessions_are_ready_the_solo_session_takes_everything() {
        let mut q = queue(3, true, 1);
        assert_eq!(kind(q.take(false, true)), None);
        assert_eq!(kind(q.take(true, true)), Some(Solo));
        assert_eq!(kind(q.take(true, true)), None, "one image at a time on the solo session");
        let mut q = queue(3, true, 0);
        assert_eq!(kind(q.take(true, false)), Some(Solo));
    }

    #[test]
    fn without_a_solo_session_the_pool_takes_every_image() {
        let mut q = queue(1, false, 2);
        assert_eq!(kind(q.take(false, true)), Some(Pool));
        let mut q = queue(2, false, 1);
        assert_eq!(kind(q.take(false, true)), Some(Pool));
    }
}
