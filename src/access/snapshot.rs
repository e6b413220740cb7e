//! A customer's whole access data, as the access cache ([`crate::cache`]) keeps it: what
//! [`crate::store::load_access`] would return for any resource and feature of the customer,
//! loaded in one statement (one snapshot) and answered from memory.

use std::collections::{BTreeMap, BTreeSet};
use std::mem::size_of;

use super::{StoredAccess, StoredEntitlement, StoredUsage};

/// A live customer's access data. A customer that is unknown or deleted is `None` where this
/// is used.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CustomerAccess {
    /// A subscription with status ACTIVE or IN_TRIAL exists.
    pub has_active_subscription: bool,
    /// The resource keys (`""`: none) that have an entitlement set.
    pub sets: BTreeSet<Box<str>>,
    /// By (resource key, feature id), sorted: the entitlement and the usage, either may be
    /// missing.
    features: Vec<(FeatureKey, Feature)>,
    /// Some feature has an entitlement (§7.7's "any entitlement").
    any_entitlement: bool,
}

/// A (resource key, feature id) pair; `""` for no resource.
pub type FeatureKey = (Box<str>, Box<str>);

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Feature {
    pub entitlement: Option<StoredEntitlement>,
    pub usage: Option<StoredUsage>,
}

impl CustomerAccess {
    pub fn new(
        has_active_subscription: bool,
        sets: BTreeSet<Box<str>>,
        features: BTreeMap<FeatureKey, Feature>,
    ) -> Self {
        let any_entitlement = features.values().any(|f| f.entitlement.is_some());
        Self {
            has_active_subscription,
            sets,
            features: features.into_iter().collect(),
            any_entitlement,
        }
    }

    /// What [`crate::store::load_access`] returns for this customer, `resource_key` and
    /// feature, value for value (including the fields it leaves at their defaults when the
    /// entitlement is found).
    pub fn stored(&self, resource_key: &str, feature_id: &str) -> StoredAccess {
        let feature = self
            .features
            .binary_search_by(|((r, f), _)| (&**r, &**f).cmp(&(resource_key, feature_id)))
            .ok()
            .map(|i| &self.features[i].1);
        let entitlement = feature.and_then(|f| f.entitlement.clone());
        let found = entitlement.is_some();
        StoredAccess {
            customer_live: true,
            resource_set_exists: !resource_key.is_empty()
                && (found || self.sets.contains(resource_key)),
            has_active_subscription: !found && self.has_active_subscription,
            has_any_entitlement: found || self.any_entitlement,
            entitlement,
            usage: feature.and_then(|f| f.usage.clone()),
        }
    }

    /// About how many bytes this takes in memory: what bounds the cache.
    pub fn weight(&self) -> u32 {
        // a heap allocation costs at least this much beyond what it holds
        const ALLOC: usize = 16;
        let text = |s: &str| s.len() + ALLOC;
        let mut bytes = size_of::<Self>();
        for set in &self.sets {
            bytes += text(set) + 3 * size_of::<usize>();
        }
        for ((resource, feature), f) in &self.features {
            bytes += text(resource) + text(feature) + size_of::<Feature>() + 4 * size_of::<usize>();
            if let Some(e) = &f.entitlement {
                bytes += text(&e.feature_type);
                bytes += e.meter_type.as_deref().map_or(0, text);
                bytes += e.reset_period.as_deref().map_or(0, text);
                bytes += e.enum_values.as_ref().map_or(0, |v| {
                    ALLOC
                        + v.iter()
                            .map(|s| size_of::<String>() + text(s))
                            .sum::<usize>()
                });
            }
        }
        u32::try_from(bytes).unwrap_or(u32::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entitlement(feature_type: &str) -> StoredEntitlement {
        StoredEntitlement {
            feature_type: feature_type.into(),
            ..Default::default()
        }
    }

    fn key(resource: &str, feature: &str) -> FeatureKey {
        (resource.into(), feature.into())
    }

    fn customer(
        has_active: bool,
        sets: &[&str],
        features: Vec<(FeatureKey, Feature)>,
    ) -> CustomerAccess {
        CustomerAccess::new(
            has_active,
            sets.iter().map(|s| Box::from(*s)).collect(),
            features.into_iter().collect(),
        )
    }

    #[test]
    fn a_found_entitlement_reads_as_the_single_query_answers_it() {
        let c = customer(
            true,
            &[""],
            vec![(
                key("", "seats"),
                Feature {
                    entitlement: Some(entitlement("NUMERIC")),
                    usage: Some(StoredUsage {
                        current_usage: 3.0,
                        ..Default::default()
                    }),
                },
            )],
        );
        let s = c.stored("", "seats");
        assert!(s.customer_live);
        assert!(!s.resource_set_exists, "no resource asked");
        assert!(
            !s.has_active_subscription,
            "not read when the entitlement is found"
        );
        assert!(s.has_any_entitlement);
        assert_eq!(s.usage.unwrap().current_usage, 3.0);
        let r = c.stored("r1", "seats");
        assert!(r.entitlement.is_none());
        assert!(!r.resource_set_exists);
        assert!(r.has_active_subscription);
        assert!(r.has_any_entitlement);
    }

    #[test]
    fn a_missing_entitlement_reads_the_set_the_subscription_and_any_other_entitlement() {
        let api = (
            key("r1", "api"),
            Feature {
                entitlement: None,
                usage: Some(StoredUsage::default()),
            },
        );
        let c = customer(false, &["r1"], vec![api.clone()]);
        let s = c.stored("r1", "api");
        assert!(s.resource_set_exists);
        assert!(!s.has_any_entitlement, "usage alone is no entitlement");
        assert!(!s.has_active_subscription);
        assert!(s.usage.is_some());
        let x = (
            key("r2", "x"),
            Feature {
                entitlement: Some(entitlement("BOOLEAN")),
                usage: None,
            },
        );
        let c = customer(false, &["r1", "r2"], vec![api, x]);
        assert!(c.stored("r1", "api").has_any_entitlement);
        assert!(c.stored("r2", "x").resource_set_exists);
    }

    #[test]
    fn weight_grows_with_what_is_held() {
        let empty = CustomerAccess::default().weight();
        let c = customer(
            false,
            &[],
            vec![(
                key("", "feature-with-a-long-name"),
                Feature {
                    entitlement: Some(entitlement("METERED")),
                    usage: None,
                },
            )],
        );
        assert!(c.weight() > empty + 24);
    }
}
