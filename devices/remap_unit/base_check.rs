//! Watches where firmware or the guest places the remap unit's register BAR and compares it with
//! the DRHD base the DMAR table published (PCI 3.0 §6.2.5.1 BAR sizing, §6.2.2 Memory Space).

use log::{debug, error, info};

use crate::pci::config::Registers;
use crate::pci::header::{bar_address, command, offset};
use crate::pci::{BarKind, BarSpec};

/// Called with every new address BAR0 decodes at, matching or not (so the caller can persist
/// a calibration). Runs on the socket's request thread while QEMU waits for the reply: keep
/// it short and never wait on QEMU.
pub type OnAssigned = Box<dyn Fn(u64) + Send>;

/// What a newly decoded BAR address means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// No DRHD base was published: the address is only learned.
    Learned(u64),
    /// The BAR sits where the DMAR table says the registers are.
    Matches(u64),
    /// The BAR sits elsewhere: the guest will not find its IOMMU registers.
    Mismatch {
        /// Where the BAR decodes.
        actual: u64,
        /// The DRHD base the DMAR table published.
        expected: u64,
    },
}

/// The BAR placement check of a remap unit.
///
/// The address counts once the function decodes it: Memory Space Enable set and BAR0 holding
/// neither the all-ones sizing pattern nor 0. SeaBIOS writes the BAR first and then sets
/// Memory Space Enable; Linux clears Memory Space Enable around its own sizing and restores
/// both afterwards; a reassignment may rewrite the BAR with decoding on. Each new address is
/// reported once (until a reset).
pub struct BaseCheck {
    expected: Option<u64>,
    on_assigned: Option<OnAssigned>,
    /// The last address reported, to report each placement once.
    reported: Option<u64>,
}

impl std::fmt::Debug for BaseCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BaseCheck")
            .field("expected", &self.expected)
            .field("on_assigned", &self.on_assigned.is_some())
            .field("reported", &self.reported)
            .finish()
    }
}

impl BaseCheck {
    /// A check against the DRHD base `expected` (`None`: nothing published yet, learn only).
    pub fn new(expected: Option<u64>) -> Self {
        BaseCheck {
            expected,
            on_assigned: None,
            reported: None,
        }
    }

    /// Also call `f` with every new address the BAR decodes at.
    pub fn on_assigned(mut self, f: impl Fn(u64) + Send + 'static) -> Self {
        self.on_assigned = Some(Box::new(f));
        self
    }

    /// The DRHD base the check compares against.
    pub fn expected(&self) -> Option<u64> {
        self.expected
    }

    /// Function-level reset or client gone: the next placement is reported again.
    pub fn reset(&mut self) {
        self.reported = None;
    }

    /// After a configuration write: reports a new placement of `bar`, if any.
    pub fn observe(&mut self, regs: &Registers, bar: &BarSpec) -> Option<Placement> {
        let actual = decoded_address(regs, bar)?;
        if self.reported == Some(actual) {
            return None;
        }
        let previous = self.reported.replace(actual);
        let placement = match self.expected {
            None => Placement::Learned(actual),
            Some(expected) if expected == actual => Placement::Matches(actual),
            Some(expected) => Placement::Mismatch { actual, expected },
        };
        log_placement(placement, previous);
        if let Some(f) = &self.on_assigned {
            f(actual);
        }
        Some(placement)
    }
}

/// Where BAR `bar` decodes, if it does: Memory Space Enable set and a real address programmed.
pub fn decoded_address(regs: &Registers, bar: &BarSpec) -> Option<u64> {
    if regs.u16(offset::COMMAND) & command::MEMORY == 0 {
        return None;
    }
    let address = bar_address(regs, bar);
    (address != 0 && address != sizing_pattern(bar)).then_some(address)
}

/// The low BAR bits that hold type and prefetchable flags, not address (PCI 3.0 §6.2.5.1).
const BAR_FLAG_BITS: u64 = 0xf;

/// What the BAR's address bits read after an all-ones write: the size mask.
fn sizing_pattern(bar: &BarSpec) -> u64 {
    let mask = !(bar.size.max(1) - 1) & !BAR_FLAG_BITS;
    match bar.kind {
        BarKind::Memory32 => mask & u64::from(u32::MAX),
        BarKind::Memory64 => mask,
    }
}

fn log_placement(placement: Placement, previous: Option<u64>) {
    match placement {
        Placement::Learned(actual) => {
            info!("remap unit: BAR0 placed at 0x{actual:x} (no DRHD base published yet)")
        }
        Placement::Matches(actual) => {
            info!("remap unit: BAR0 placed at 0x{actual:x}, the DMAR table's DRHD base")
        }
        Placement::Mismatch { actual, expected } if previous == Some(expected) => error!(
            "remap unit: BAR0 moved from 0x{expected:x} (the DMAR table's DRHD base) to \
             0x{actual:x}: the guest loses its IOMMU registers. A guest kernel does this when \
             interrupt-remapping probing reserved the DRHD range before PCI claimed the BAR: \
             boot it with `intremap=off`"
        ),
        Placement::Mismatch { actual, expected } => error!(
            "remap unit: firmware put BAR0 at 0x{actual:x} but the DMAR table says the DRHD \
             registers are at 0x{expected:x}: the guest would lose its IOMMU registers. The \
             calibration for this topology is stale or missing: rerun the calibration, or pass \
             --drhd-base 0x{actual:x}, and restart QEMU"
        ),
    }
    if let Some(previous) = previous {
        debug!("remap unit: BAR0 was at 0x{previous:x} before");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::pci::header::{define_bar, define_header};
    use crate::pci::{ConfigSpace, Identity};

    const BAR: BarSpec = BarSpec {
        index: 0,
        size: 0x4000,
        kind: BarKind::Memory32,
        prefetchable: false,
    };
    const BAR_AT: u64 = offset::BAR0 as u64;
    const COMMAND_AT: u64 = offset::COMMAND as u64;

    fn config() -> ConfigSpace {
        let mut regs = Registers::default();
        define_header(&mut regs, &Identity::TEST);
        define_bar(&mut regs, &BAR);
        ConfigSpace::new(regs, Vec::new())
    }

    /// Runs guest config writes through a check; returns the placements and callback values.
    fn run(expected: Option<u64>, writes: &[(u64, u32)]) -> (Vec<Placement>, Vec<u64>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&seen);
        let mut check = BaseCheck::new(expected).on_assigned(move |a| sink.lock().unwrap().push(a));
        let mut cfg = config();
        let mut placements = Vec::new();
        for &(at, value) in writes {
            let bytes = value.to_le_bytes();
            let len = if at == COMMAND_AT { 2 } else { 4 };
            cfg.write(at, &bytes[..len]).unwrap();
            placements.extend(check.observe(cfg.regs(), &BAR));
        }
        let seen = seen.lock().unwrap().clone();
        (placements, seen)
    }

    const MEM: u32 = command::MEMORY as u32;

    #[test]
    fn test_seabios_order_sizes_then_places_then_enables() {
        let writes = [
            (BAR_AT, u32::MAX),
            (BAR_AT, 0),
            (BAR_AT, 0xfeb0_0000),
            (COMMAND_AT, MEM),
        ];
        let (placements, seen) = run(Some(0xfeb0_0000), &writes);
        assert_eq!(placements, [Placement::Matches(0xfeb0_0000)]);
        assert_eq!(seen, [0xfeb0_0000]);
    }

    #[test]
    fn test_linux_sizing_with_decode_off_reports_nothing_new() {
        let writes = [
            (BAR_AT, 0xfeb0_0000),
            (COMMAND_AT, MEM),
            // pci_read_bases: decode off, size, restore, decode back on.
            (COMMAND_AT, 0),
            (BAR_AT, u32::MAX),
            (BAR_AT, 0xfeb0_0000),
            (COMMAND_AT, MEM),
        ];
        let (placements, seen) = run(Some(0xfeb0_0000), &writes);
        assert_eq!(placements, [Placement::Matches(0xfeb0_0000)]);
        assert_eq!(seen, [0xfeb0_0000]);
    }

    #[test]
    fn test_sizing_with_decode_on_is_not_a_placement() {
        let writes = [(COMMAND_AT, MEM), (BAR_AT, u32::MAX), (BAR_AT, 0)];
        let (placements, seen) = run(Some(0xfeb0_0000), &writes);
        assert!(placements.is_empty(), "{placements:?}");
        assert!(seen.is_empty());
    }

    #[test]
    fn test_enable_then_place_reports_the_mismatch() {
        let writes = [(COMMAND_AT, MEM), (BAR_AT, 0xfebf_c000)];
        let (placements, seen) = run(Some(0xfeb0_0000), &writes);
        assert_eq!(
            placements,
            [Placement::Mismatch {
                actual: 0xfebf_c000,
                expected: 0xfeb0_0000
            }]
        );
        assert_eq!(seen, [0xfebf_c000]);
    }

    #[test]
    fn test_guest_moving_the_bar_is_reported_with_both_addresses() {
        let writes = [
            (BAR_AT, 0xfeb0_0000),
            (COMMAND_AT, MEM),
            (COMMAND_AT, 0),
            (BAR_AT, 0x4000_0000),
            (COMMAND_AT, MEM),
        ];
        let (placements, seen) = run(Some(0xfeb0_0000), &writes);
        assert_eq!(
            placements,
            [
                Placement::Matches(0xfeb0_0000),
                Placement::Mismatch {
                    actual: 0x4000_0000,
                    expected: 0xfeb0_0000
                }
            ]
        );
        assert_eq!(seen, [0xfeb0_0000, 0x4000_0000]);
    }

    #[test]
    fn test_without_expected_base_the_address_is_learned() {
        let writes = [(BAR_AT, 0xfebf_f000), (COMMAND_AT, MEM)];
        let (placements, seen) = run(None, &writes);
        // The BAR is 16 KiB: its low address bits are read-only zero.
        assert_eq!(placements, [Placement::Learned(0xfebf_c000)]);
        assert_eq!(seen, [0xfebf_c000]);
    }

    #[test]
    fn test_reset_reports_the_same_placement_again() {
        let mut check = BaseCheck::new(Some(0x1000_0000));
        let mut cfg = config();
        cfg.write(BAR_AT, &0x1000_0000u32.to_le_bytes()).unwrap();
        cfg.write(COMMAND_AT, &command::MEMORY.to_le_bytes())
            .unwrap();
        assert!(check.observe(cfg.regs(), &BAR).is_some());
        assert_eq!(check.observe(cfg.regs(), &BAR), None);
        check.reset();
        assert_eq!(
            check.observe(cfg.regs(), &BAR),
            Some(Placement::Matches(0x1000_0000))
        );
    }

    #[test]
    fn test_enabled_at_zero_is_not_a_placement() {
        let (placements, _) = run(Some(0xfeb0_0000), &[(COMMAND_AT, MEM)]);
        assert!(placements.is_empty());
    }

    #[test]
    fn test_sizing_pattern_of_each_kind() {
        assert_eq!(sizing_pattern(&BAR), 0xffff_c000);
        let bar64 = BarSpec {
            kind: BarKind::Memory64,
            size: 1 << 32,
            ..BAR
        };
        assert_eq!(sizing_pattern(&bar64), 0xffff_ffff_0000_0000);
    }
}
