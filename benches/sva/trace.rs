//! Where a page fault's round trip goes, from the server's own log at trace level (microsecond
//! timestamps): each one-page fault job of the guest's `sva-bench rtt`, from the device's
//! doorbell to its completion interrupt, cut at the hand-offs between the device, the vIOMMU's
//! front end, QEMU and the guest.

/// The points of one page fault, in the order they happen.
const POINTS: [&str; 8] = [
    "accel: doorbell",
    ": page request PageRequest",
    "vIOMMU page request PageRequest",
    "remap unit: ",
    "vIOMMU: IQT written",
    ": page response, group",
    "the engine goes on",
    "accel: completion interrupt",
];

/// The front end sent the page request interrupt (a DMA_WRITE to QEMU)...
const SENT: &str = "vIOMMU PageRequest interrupt";
/// ...and QEMU's reply to a posted DMA_WRITE came in.
const ACKNOWLEDGED: &str = "(posted) acknowledged";

/// What each stretch between two points is.
pub const SEGMENTS: [&str; 7] = [
    "device: doorbell, descriptor, ATS miss, page request",
    "front end thread: page request written into the guest's PRQ",
    "PRQ interrupt (DMA_WRITE, QEMU) to the guest's first VT-d access",
    "guest: PRQ handler, page fault, group response (IQT write)",
    "front end thread: IQT write to the device's PRI",
    "device: response to the engine running again",
    "device: the copy, completion record and interrupt",
];

/// One page fault: the stretches between the points (µs).
pub struct Fault {
    /// `SEGMENTS`, in order.
    pub segments: [f64; 7],
    /// Whether the guest wrote IQT (its answer) before the front end's thread was done
    /// sending the interrupt: the answer waited for that thread.
    pub answer_waited: bool,
}

/// Microseconds since midnight of a `[2026-12-06T03:31:08.526719Z LEVEL target] msg` line.
fn micros(line: &str) -> Option<f64> {
    let stamp = line.strip_prefix('[')?.split_whitespace().next()?;
    let time = stamp.split_once('T')?.1.trim_end_matches('Z');
    let mut parts = time.split(':');
    let (h, m, s) = (parts.next()?, parts.next()?, parts.next()?);
    let seconds =
        h.parse::<f64>().ok()? * 3600.0 + m.parse::<f64>().ok()? * 60.0 + s.parse::<f64>().ok()?;
    Some(seconds * 1e6)
}

fn message(line: &str) -> Option<&str> {
    Some(line.split_once("] ")?.1)
}

/// Every complete one-page fault in `log`: a doorbell, then exactly one page request, through
/// to the completion interrupt, with no other doorbell in between.
pub fn faults(log: &str) -> Vec<Fault> {
    let mut out = Vec::new();
    let mut seen: Vec<f64> = Vec::new();
    let mut sent = None;
    for line in log.lines() {
        let (Some(msg), Some(t)) = (message(line), micros(line)) else {
            continue;
        };
        if msg.contains(SENT) && seen.len() >= 3 {
            sent = Some(t);
            continue;
        }
        let Some(p) = POINTS.iter().position(|needle| msg.contains(needle)) else {
            continue;
        };
        if p == 0 {
            seen.clear();
            seen.push(t);
            sent = None;
        } else if p == seen.len() {
            // The next point in order (repeats of an earlier one, e.g. more register accesses
            // by the guest, do not count).
            seen.push(t);
            if seen.len() == POINTS.len() {
                let mut segments = [0.0; 7];
                for (i, w) in seen.windows(2).enumerate() {
                    segments[i] = w[1] - w[0];
                }
                if segments.iter().all(|x| *x >= 0.0) {
                    let answer_waited = sent.is_some_and(|s| s > seen[4]);
                    out.push(Fault {
                        segments,
                        answer_waited,
                    });
                }
                seen.clear();
            }
        } else if p == 1 && seen.len() > 1 {
            seen.clear(); // a second page request: not a one-page fault
        }
    }
    out
}

/// For every page request interrupt sent as a posted DMA_WRITE, the time (µs) from sending it
/// to QEMU's reply (empty when interrupts wait for their replies: the log then shows the
/// interrupt only once the reply is in).
pub fn acknowledgements(log: &str) -> Vec<f64> {
    let mut out = Vec::new();
    let mut sent = None;
    for line in log.lines() {
        let (Some(msg), Some(t)) = (message(line), micros(line)) else {
            continue;
        };
        if msg.contains(SENT) {
            sent = Some(t);
        } else if msg.contains(ACKNOWLEDGED) {
            if let Some(s) = sent.take() {
                out.push(t - s);
            }
        }
    }
    out
}
