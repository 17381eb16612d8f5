//! The open-loop schedule and the latency-start rule, kept pure so they can be tested.

use std::time::Duration;

/// Offset from the start of the run at which request `i` of connection `k` (of `connections`)
/// is due, for a total offered rate of `rate` requests per second. Connections interleave, so
/// the whole generator offers exactly `rate`, evenly spaced: request `k + i·connections` of the
/// global sequence.
pub fn intended_offset(rate: f64, connections: usize, k: usize, i: u64) -> Duration {
    let n = k as f64 + i as f64 * connections as f64;
    Duration::from_secs_f64(n / rate)
}

/// When a request's latency starts.
///
/// If the generator had to *wait* for the intended time (the connection was idle), any delay
/// between the intended time and the real send is the generator's own timer slack (tokio's timer
/// has a 1 ms granularity), not the system's: latency starts at the real send. If the request
/// was already late when its turn came (the previous response on the connection, or a full
/// stream window, held it back), that wait is queueing caused by the system under test:
/// latency starts at the intended time (coordinated-omission correction, as in wrk2).
pub fn latency_start<T: Copy>(waited_for_timer: bool, intended: T, actual_send: T) -> T {
    if waited_for_timer { actual_send } else { intended }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_interleave_to_the_total_rate() {
        // 1000 req/s over 4 connections: the global sequence is evenly spaced by 1 ms.
        let mut all: Vec<Duration> = (0..4)
            .flat_map(|k| (0..5).map(move |i| intended_offset(1000.0, 4, k, i)))
            .collect();
        all.sort();
        for (n, d) in all.iter().enumerate() {
            assert_eq!(d.as_micros(), n as u128 * 1000);
        }
    }

    #[test]
    fn late_requests_count_their_queueing() {
        assert_eq!(latency_start(false, 10, 25), 10);
        assert_eq!(latency_start(true, 10, 11), 11);
    }
}
