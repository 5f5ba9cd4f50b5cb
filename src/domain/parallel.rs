//! Work over many Macs split across the machine's cores (up to 8): each item is computed from
//! shared, read-only state, and the results come back in the items' order, as computing them
//! one after another would give them. A small organisation is computed on the calling thread.

/// Items a thread takes at least.
pub const PER_THREAD: usize = 8_192;

/// `f` of each of `items`, in order; on several threads when there are more than `per_thread`.
pub fn map<T: Sync, R: Send>(items: &[T], per_thread: usize, f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()).min(8);
    let threads = cores.min(items.len().div_ceil(per_thread.max(1))).max(1);
    if threads == 1 {
        return items.iter().map(f).collect();
    }
    let chunk = items.len().div_ceil(threads);
    let f = &f;
    std::thread::scope(|scope| {
        let parts: Vec<_> =
            items.chunks(chunk).map(|part| scope.spawn(move || part.iter().map(f).collect::<Vec<R>>())).collect();
        // A thread that panicked re-raises its panic here, as computing on this thread would.
        parts.into_iter().flat_map(|p| p.join().unwrap_or_else(|e| std::panic::resume_unwind(e))).collect()
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_item_once_in_order_whatever_the_split() {
        let items: Vec<u32> = (0..10_001).collect();
        let sequential: Vec<u64> = items.iter().map(|i| u64::from(*i) * 3).collect();
        for per_thread in [1, 7, 1_000, 10_001, 20_000] {
            assert_eq!(super::map(&items, per_thread, |i| u64::from(*i) * 3), sequential, "{per_thread}");
        }
        assert!(super::map(&[] as &[u32], 1, |i| *i).is_empty());
    }
}
