//! Reading pathological shapes (deep nesting of every kind, huge attribute
//! lists, millions of entities or `<br>`, thousands of quote levels, one
//! long line, many small parts), each at 100 KB, 1 MB and 5 MB: time and
//! peak memory per MB of the whole reading step (`pipeline::analyze`). Reading
//! is linear when each shape's time per MB at 5 MB is within 2x its time per
//! MB at 100 KB; the last column says so.
//!
//! Run with `cargo bench --bench pathological [-- NAME]` (NAME: only the
//! shapes whose name contains it).

#![allow(clippy::print_stdout, reason = "a benchmark reports on stdout")]

#[path = "support/shapes.rs"]
mod shapes;

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The system allocator, counting the bytes in use and their peak.
struct Counting;

static IN_USE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed on to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = IN_USE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(now, Ordering::Relaxed);
        // SAFETY: the caller's layout, as given.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        IN_USE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: a pointer this allocator gave out, with its layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() {
            let now = IN_USE.fetch_add(new_size - layout.size(), Ordering::Relaxed) + new_size - layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        } else {
            IN_USE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
        }
        // SAFETY: as in alloc and dealloc.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Reads `message` until at least `budget` has passed (and at least twice):
/// the best time of one reading, and the peak of memory in use above what
/// was in use before, over the message's own size.
fn measure(message: &[u8], budget: Duration) -> (Duration, usize) {
    let before = IN_USE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let mut best = Duration::MAX;
    let started = Instant::now();
    let mut runs = 0;
    while runs < 2 || started.elapsed() < budget {
        let t = Instant::now();
        black_box(mailgate::pipeline::analyze("olivia@acme.example", &[], black_box(message)));
        best = best.min(t.elapsed());
        runs += 1;
    }
    (best, PEAK.load(Ordering::Relaxed).saturating_sub(before))
}

fn main() {
    let sizes = [100 * 1024, 1024 * 1024, 5 * 1024 * 1024];
    println!("| shape | ms/MB at 100 KB | ms/MB at 1 MB | ms/MB at 5 MB | peak MB/MB at 5 MB | 5 MB vs 100 KB |");
    println!("|---|---|---|---|---|---|");
    let mut worst: f64 = 0.0;
    let only = std::env::args().skip(1).find(|a| !a.starts_with('-')).unwrap_or_default();
    for shape in shapes::all().into_iter().filter(|s| s.name.contains(&only)) {
        let mut per_mb = Vec::new();
        let mut peak_per_mb = 0.0;
        for size in sizes {
            let message = (shape.build)(size);
            let mb = message.len() as f64 / (1024.0 * 1024.0);
            let (time, peak) = measure(&message, Duration::from_millis(600));
            per_mb.push(time.as_secs_f64() * 1e3 / mb);
            peak_per_mb = peak as f64 / (1024.0 * 1024.0) / mb;
        }
        let ratio = per_mb[2] / per_mb[0];
        worst = worst.max(ratio);
        println!(
            "| {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2}x {} |",
            shape.name,
            per_mb[0],
            per_mb[1],
            per_mb[2],
            peak_per_mb,
            ratio,
            if ratio <= 2.0 { "linear" } else { "NOT LINEAR" }
        );
    }
    println!("\nworst ratio of time per MB, 5 MB against 100 KB: {worst:.2}x (linear: at most 2x)");
}
