//! A pre-faulted arena for the lead worker's ORT sessions (the solo session and its pool session).
//!
//! A session's first run is ~35 ms slower than later ones on this kind of VM, and nearly all of it
//! is page faults: ORT's own arena maps ~38 MB of fresh memory for the activations during that run
//! (~9,700 faults at ~3 µs each). This arena maps one region at start-up and has a spare core
//! fault it in while ONNX Runtime loads and the solo session is built, so the first answered
//! request runs on memory that is already there (measured in `docs/performance.md`).
//!
//! It is an ordinary allocator registered in the ORT environment (`RegisterAllocator`; sessions opt
//! in with `session.use_env_allocators`): first fit over address-ordered free ranges, so every run
//! reuses the same low addresses. A request that does not fit adds a region that is not
//! pre-faulted; regions are kept for the life of the process, like ORT's own arena keeps its.

use std::collections::{BTreeMap, HashMap};
use std::ffi::c_void;
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};

use ort::AsPointer;
use ort::memory::{AllocationDevice, AllocatorType, MemoryInfo, MemoryType};

use crate::error::{Error, Result};

/// Alignment of every block (ORT's CPU allocator aligns to 64 bytes, which MLAS relies on).
const ALIGN: usize = 64;
/// Smallest region added when a request does not fit.
const GROW_BYTES: usize = 4 << 20;

/// Usage counters, for logs and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ArenaStats {
    /// Bytes mapped, all regions.
    pub mapped: usize,
    /// Bytes of the first (pre-faulted) region.
    pub prefaulted: usize,
    /// Regions added after the first because a request did not fit.
    pub grown: usize,
    /// Bytes allocated now.
    pub in_use: usize,
    /// Most bytes allocated at once.
    pub peak: usize,
    /// Highest end of a block in the first region, from its start (the part of it ever used).
    pub reach: usize,
}

/// The free ranges and live blocks of all regions.
#[derive(Debug, Default)]
struct Blocks {
    /// Free ranges: start address → length, never adjacent (merged on free).
    free: BTreeMap<usize, usize>,
    /// Live blocks: start address → length.
    live: HashMap<usize, usize>,
    /// Start of the first region.
    first: Option<usize>,
    stats: ArenaStats,
}

impl Blocks {
    /// First fit: the lowest free range that holds `size` bytes.
    fn take(&mut self, size: usize) -> Option<usize> {
        let (&start, &len) = self.free.iter().find(|&(_, &len)| len >= size)?;
        self.free.remove(&start);
        if len > size {
            self.free.insert(start + size, len - size);
        }
        self.live.insert(start, size);
        self.stats.in_use += size;
        self.stats.peak = self.stats.peak.max(self.stats.in_use);
        if let Some(first) = self.first
            && (first..first + self.stats.prefaulted).contains(&start)
        {
            self.stats.reach = self.stats.reach.max(start + size - first);
        }
        Some(start)
    }

    /// Returns a live block to the free ranges, merging it with its neighbours. False if `start`
    /// is not a live block of this arena.
    fn give_back(&mut self, start: usize) -> bool {
        let Some(len) = self.live.remove(&start) else { return false };
        self.stats.in_use -= len;
        let (mut from, mut to) = (start, start + len);
        if let Some(next_len) = self.free.remove(&to) {
            to += next_len;
        }
        if let Some((&prev, &prev_len)) = self.free.range(..start).next_back()
            && prev + prev_len == start
        {
            self.free.remove(&prev);
            from = prev;
        }
        self.free.insert(from, to - from);
        true
    }

    /// Adds a mapped range as free memory.
    fn add_region(&mut self, start: usize, len: usize) {
        self.stats.mapped += len;
        self.free.insert(start, len);
    }
}

/// State behind the allocator's lock.
struct Inner {
    blocks: Blocks,
    /// Bytes at the start of the first region already faulted in.
    faulted: usize,
    /// Faulting in has begun (on the spare core, or inline by an allocation that came first).
    started: bool,
}

/// The allocator itself, without ORT: mapped regions, their free ranges and the first region's
/// faulting in.
pub struct Regions {
    inner: Mutex<Inner>,
    /// Signalled each time more of the first region is faulted in.
    progress: Condvar,
    /// The first region: (start, length).
    first: (usize, usize),
}

/// Faulting in proceeds in steps of this many bytes; blocks below the mark are handed out at once.
const FAULT_STEP: usize = 1 << 20;

impl Regions {
    /// Maps a first region of `bytes`, to be faulted in by [`fault_in`](Self::fault_in) (or by
    /// the first allocation that needs it, if that comes first).
    pub fn new(bytes: usize) -> Result<Self> {
        let mut blocks = Blocks::default();
        let mut first = (0, 0);
        if bytes > 0 {
            let len = bytes
                .checked_next_multiple_of(page_size())
                .ok_or_else(|| Error::Startup(format!("arena region of {bytes} bytes is too large")))?;
            let start = map(len).ok_or_else(|| Error::Startup(format!("cannot map a {len}-byte arena region")))?;
            blocks.add_region(start, len);
            blocks.stats.prefaulted = len;
            blocks.first = Some(start);
            first = (start, len);
        }
        let inner = Inner { blocks, faulted: 0, started: bytes == 0 };
        Ok(Self { inner: Mutex::new(inner), progress: Condvar::new(), first })
    }

    /// Faults the first region in, from its start up (meant for a spare core during start-up);
    /// returns at once if that has already begun.
    ///
    /// Pages are faulted in by writing to them, so a block is handed out only once every page of
    /// it is done (blocks are first fit from the bottom, so the session build's few small ones
    /// wait for the first step only). `MADV_POPULATE_WRITE` would leave contents alone, but it
    /// holds the address-space lock that loading ONNX Runtime needs: environment creation took 51
    /// instead of 35 ms beside it.
    pub fn fault_in(&self) {
        let t = std::time::Instant::now();
        {
            let mut inner = self.lock();
            if inner.started {
                return;
            }
            inner.started = true;
        }
        let (start, len) = self.first;
        let mut done = 0;
        while done < len {
            let to = (done + FAULT_STEP).min(len);
            // Nothing at or above `done` has been handed out: blocks wait for `faulted`.
            touch(start + done, to - done);
            done = to;
            self.lock().faulted = done;
            self.progress.notify_all();
        }
        tracing::debug!(bytes = len, ms = crate::api::ms_since(t), "arena faulted in");
    }

    /// Current usage.
    pub fn stats(&self) -> ArenaStats {
        self.lock().blocks.stats
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A block of at least `size` bytes, 64-byte aligned; null if memory is exhausted.
    pub fn allocate(&self, size: usize) -> *mut c_void {
        let Some(size) = size.max(1).checked_next_multiple_of(ALIGN) else { return std::ptr::null_mut() };
        let mut inner = self.lock();
        let start = match inner.blocks.take(size) {
            Some(start) => start,
            None => {
                let Some(len) = size.max(GROW_BYTES).checked_next_multiple_of(page_size()) else {
                    return std::ptr::null_mut();
                };
                let Some(start) = map(len) else { return std::ptr::null_mut() };
                inner.blocks.add_region(start, len);
                inner.blocks.stats.grown += 1;
                tracing::debug!(bytes = len, stats = ?inner.blocks.stats, "pre-faulted arena grew");
                match inner.blocks.take(size) {
                    Some(start) => start,
                    None => return std::ptr::null_mut(),
                }
            }
        };
        let (first, len) = self.first;
        if (first..first + len).contains(&start) {
            let end = start + size - first;
            if !inner.started {
                // Nobody is faulting the region in: do it here, up to the end.
                inner.started = true;
                touch(first + inner.faulted, len - inner.faulted);
                inner.faulted = len;
            }
            while inner.faulted < end {
                inner = self.progress.wait(inner).unwrap_or_else(|p| p.into_inner());
            }
        }
        start as *mut c_void
    }

    /// Frees a block from [`allocate`](Self::allocate); null is ignored.
    pub fn release(&self, p: *mut c_void) {
        if p.is_null() {
            return;
        }
        if !self.lock().blocks.give_back(p as usize) {
            tracing::error!(address = p as usize, "ORT freed a block the pre-faulted arena did not hand out");
        }
    }
}

impl std::fmt::Debug for Regions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Regions").field("stats", &self.stats()).finish()
    }
}

/// [`Regions`] as an ORT allocator. `api` must stay the first field: ORT passes a pointer to it
/// back to the callbacks.
#[repr(C)]
struct OrtArena {
    api: ort::sys::OrtAllocator,
    info: MemoryInfo<'static>,
    regions: &'static Regions,
}

static REGIONS: OnceLock<Result<&'static Regions>> = OnceLock::new();

/// The process's arena memory, mapped on the first call (`bytes` then; later calls share it).
/// Needs no ONNX Runtime: call it early and start [`Regions::fault_in`] on a spare core.
pub fn shared(bytes: usize) -> Result<&'static Regions> {
    REGIONS
        .get_or_init(|| Regions::new(bytes).map(|r| &*Box::leak(Box::new(r))))
        .as_ref()
        .map(|r| *r)
        .map_err(|e| Error::Startup(e.to_string()))
}

/// Stats of the process's arena, if one was created.
pub fn shared_stats() -> Option<ArenaStats> {
    REGIONS.get().and_then(|r| r.as_ref().ok()).map(|r| r.stats())
}

/// Registers [`shared`]`(bytes)` as the CPU allocator of `env` (call once per process, with ONNX
/// Runtime loaded). Sessions use it with `session.use_env_allocators`.
pub fn register(env: &ort::environment::Environment, bytes: usize) -> Result<()> {
    let info = MemoryInfo::new(AllocationDevice::CPU, 0, AllocatorType::Device, MemoryType::Default)
        .map_err(|e| Error::Startup(format!("arena memory info: {e}")))?;
    // SAFETY: `default` only sets the API version and leaves every function pointer empty.
    let mut api = unsafe { ort::sys::OrtAllocator::default() };
    api.Alloc = Some(alloc);
    api.Free = Some(free);
    api.Info = Some(info_of);
    // ORT keeps the pointer for the life of the environment, i.e. of the process.
    let arena: &'static OrtArena = Box::leak(Box::new(OrtArena { api, info, regions: shared(bytes)? }));
    let ptr = std::ptr::from_ref(&arena.api).cast_mut();
    // SAFETY: the environment is live and `ptr` stays valid for the life of the process.
    let status = unsafe { (ort::api().RegisterAllocator)(env.ptr().cast_mut(), ptr) };
    // SAFETY: a status just returned by ORT.
    unsafe { ort::Error::result_from_status(status) }
        .map_err(|e| Error::Startup(format!("cannot register the pre-faulted arena: {e}")))
}

/// # Safety
/// `this` is the `api` field of a live `OrtArena` (ORT passes back what it was given).
unsafe extern "system" fn alloc(this: *mut ort::sys::OrtAllocator, size: usize) -> *mut c_void {
    // SAFETY: `api` is the first field of the `repr(C)` arena, which lives for the process.
    unsafe { &*this.cast::<OrtArena>() }.regions.allocate(size)
}

/// # Safety
/// As [`alloc`].
unsafe extern "system" fn free(this: *mut ort::sys::OrtAllocator, p: *mut c_void) {
    // SAFETY: as in `alloc`.
    unsafe { &*this.cast::<OrtArena>() }.regions.release(p);
}

/// # Safety
/// As [`alloc`].
unsafe extern "system" fn info_of(this: *const ort::sys::OrtAllocator) -> *const ort::sys::OrtMemoryInfo {
    // SAFETY: as in `alloc`.
    unsafe { &*this.cast::<OrtArena>() }.info.ptr()
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(p).ok().filter(|&p| p > 0).unwrap_or(4096)
}

/// Maps `len` bytes of private anonymous memory; `None` if the kernel refuses.
fn map(len: usize) -> Option<usize> {
    // SAFETY: a fresh private anonymous mapping; no existing memory is touched.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    (p != libc::MAP_FAILED).then_some(p as usize)
}

/// Faults in every page of `[start, start + len)` by writing to it.
fn touch(start: usize, len: usize) {
    let page = page_size();
    for offset in (0..len).step_by(page) {
        // SAFETY: the range is part of a mapping of ours, and no block in it has been handed out.
        unsafe { ((start + offset) as *mut u8).write_volatile(0) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_first_fit_aligned_and_merge_when_freed() {
        let arena = Regions::new(1 << 20).unwrap();
        let a = arena.allocate(100);
        let b = arena.allocate(1000);
        let c = arena.allocate(64);
        assert_eq!(a as usize % ALIGN, 0);
        assert_eq!(b as usize, a as usize + 128, "first fit packs blocks");
        assert_eq!(c as usize, b as usize + 1024);
        arena.release(b);
        assert_eq!(arena.allocate(900), b, "the freed range is reused");
        arena.release(a);
        arena.release(b);
        arena.release(c);
        let s = arena.stats();
        assert_eq!((s.in_use, s.peak, s.grown), (0, 128 + 1024 + 64, 0));
        assert_eq!(arena.allocate(1 << 20), a, "all ranges merged back into one");
    }

    /// Pages of `(start, len)` the kernel has mapped in.
    fn resident_pages((start, len): (usize, usize)) -> usize {
        let mut vec = vec![0u8; len.div_ceil(page_size())];
        // SAFETY: the range is a mapping of the test's arena; `vec` has one byte per page.
        assert_eq!(unsafe { libc::mincore(start as *mut c_void, len, vec.as_mut_ptr()) }, 0);
        vec.iter().filter(|&&b| b & 1 == 1).count()
    }

    #[test]
    fn fault_in_maps_the_whole_first_region_and_blocks_wait_for_their_pages() {
        let regions = std::sync::Arc::new(Regions::new(8 << 20).unwrap());
        let pages = (8 << 20) / page_size();
        assert_eq!(resident_pages(regions.first), 0, "nothing is touched when mapping");
        let faulting = {
            let r = regions.clone();
            std::thread::spawn(move || r.fault_in())
        };
        let low = regions.allocate(4096);
        assert_eq!(resident_pages((low as usize, 4096)), 1, "a block is handed out with its pages in");
        let rest = regions.allocate((8 << 20) - 4096);
        assert_eq!(resident_pages(regions.first), pages, "the block reaching the end waited for all");
        faulting.join().unwrap();
        regions.release(low);
        regions.release(rest);
        regions.fault_in(); // already done: returns at once
        assert_eq!(regions.stats().prefaulted, 8 << 20);
    }

    #[test]
    fn without_fault_in_the_first_allocation_faults_the_region_in() {
        let regions = Regions::new(2 << 20).unwrap();
        let block = regions.allocate(100);
        assert_eq!(resident_pages(regions.first), (2 << 20) / page_size());
        regions.release(block);
    }

    #[test]
    fn a_request_that_does_not_fit_adds_a_region() {
        let arena = Regions::new(1 << 20).unwrap();
        let small = arena.allocate(512 << 10);
        let big = arena.allocate(3 << 20);
        assert!(!big.is_null());
        // SAFETY: `big` is a fresh 3 MB block of this arena.
        unsafe { std::ptr::write_bytes(big.cast::<u8>(), 1, 3 << 20) };
        let s = arena.stats();
        assert_eq!(s.grown, 1);
        assert_eq!(s.mapped, (1 << 20) + GROW_BYTES);
        arena.release(big);
        arena.release(small);
        arena.release(std::ptr::null_mut());
        assert_eq!(arena.stats().in_use, 0);
        assert!(arena.allocate(usize::MAX).is_null(), "an impossible size is refused, not a panic");
    }
}
