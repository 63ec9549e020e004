//! Default domains of the physical model: what a device's requests without PASID translate
//! with, checked against what the unit supports as its RID_PASID or context entry would be.
//! VT-d spec 9.3 / 9.4 (context entries: AW, SLPTPTR), 9.6 (PASID entry PGTT), 3.6 / 3.7.

use crate::iommu::{DefaultDomain, IommuError, SecondStageTable, UnrecoverableReason};

use super::super::context::second_stage_geometry;
use super::super::walk::SsTable;
use super::binding::Rules;
use super::translation::Table;

/// Levels of the shallowest second-stage table (AW 001b: 39-bit AGAW); an AW field value is
/// the depth minus this.
const AW_LEVEL_BASE: u8 = 2;

/// A default domain as the translation path uses it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) enum Domain {
    /// Output = input.
    #[default]
    Identity,
    /// Every request fails with this reason.
    Blocked(UnrecoverableReason),
    /// Walk this table over the device's DMA map.
    Table(Table),
}

impl Rules {
    /// The checked form of `domain`.
    pub fn default_domain(&self, domain: &DefaultDomain) -> Result<Domain, IommuError> {
        Ok(match *domain {
            DefaultDomain::Identity => Domain::Identity,
            DefaultDomain::Blocked(reason) => Domain::Blocked(reason),
            DefaultDomain::FirstStage(table) => {
                Domain::Table(Table::First(self.first_stage(&table)?))
            }
            DefaultDomain::SecondStage(table) => {
                Domain::Table(Table::Second(self.second_stage(&table)?))
            }
        })
    }

    /// A second-stage table as a context entry with this AW would describe it: a depth the
    /// unit supports (CAP.SAGAW), input width min(AGAW, MGAW), no A/D or execute control (the
    /// neutral API has neither).
    fn second_stage(&self, table: &SecondStageTable) -> Result<SsTable, IommuError> {
        if !self.valid_table(table.root) {
            return Err(IommuError::InvalidTarget(
                "second-stage root not 4 KiB aligned or beyond the address width",
            ));
        }
        let aw = table.levels.wrapping_sub(AW_LEVEL_BASE);
        let (levels, width) = second_stage_geometry(aw, &self.config).ok_or(
            IommuError::InvalidTarget("second-stage depth not supported (SAGAW)"),
        )?;
        Ok(SsTable {
            root: table.root,
            levels,
            width,
            ad: false,
            exec: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iommu::{FirstStageFlags, PageTable, PagingLevels};
    use crate::vtd::cap::VtdConfig;

    fn second(root: u64, levels: u8) -> DefaultDomain {
        DefaultDomain::SecondStage(SecondStageTable { root, levels })
    }

    #[test]
    fn test_second_stage_depths_follow_sagaw() {
        let rules = Rules::new(VtdConfig::default());
        for (levels, width) in [(3, 39), (4, 48)] {
            let Ok(Domain::Table(Table::Second(ss))) =
                rules.default_domain(&second(0x5000, levels))
            else {
                panic!("{levels} levels refused");
            };
            assert_eq!((ss.root, ss.levels, ss.width), (0x5000, levels, width));
        }
        for levels in [0, 2, 5, 6, 255] {
            assert!(
                rules.default_domain(&second(0x5000, levels)).is_err(),
                "{levels} levels (default SAGAW: 3 and 4)"
            );
        }
        assert!(rules.default_domain(&second(0x5008, 4)).is_err());
        assert!(rules.default_domain(&second(1 << 48, 4)).is_err());
    }

    #[test]
    fn test_first_stage_checked_like_a_binding() {
        let rules = Rules::new(VtdConfig {
            fl_5level: false,
            ..VtdConfig::default()
        });
        let table = |levels| {
            DefaultDomain::FirstStage(PageTable {
                root: 0x3000,
                levels,
                flags: FirstStageFlags::default(),
            })
        };
        assert!(matches!(
            rules.default_domain(&table(PagingLevels::Four)),
            Ok(Domain::Table(Table::First(fs))) if fs.root == 0x3000 && !fs.five_level
        ));
        assert!(rules.default_domain(&table(PagingLevels::Five)).is_err());
        let blocked = DefaultDomain::Blocked(UnrecoverableReason::PasidInvalid);
        assert_eq!(
            rules.default_domain(&blocked),
            Ok(Domain::Blocked(UnrecoverableReason::PasidInvalid))
        );
    }
}
