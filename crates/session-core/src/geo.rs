//! Where a session was last used: what a GeoIP lookup found for the
//! client's address, and the great-circle arithmetic of the impossible
//! travel rule. The lookup itself (a MaxMind database) is the server's;
//! this module only holds and compares places.

use std::fmt;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Mean Earth radius (IUGG), in km.
const EARTH_RADIUS_KM: f64 = 6371.0088;

/// A point on the Earth with how far off it may be.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Coordinates {
    /// Degrees north.
    pub latitude: f64,
    /// Degrees east.
    pub longitude: f64,
    /// The database's accuracy radius around the point, in km, where it
    /// gives one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy_km: Option<u32>,
}

impl Coordinates {
    /// Great-circle distance to `other` in km (haversine).
    pub fn distance_km(&self, other: &Self) -> f64 {
        let (p1, p2) = (self.latitude.to_radians(), other.latitude.to_radians());
        let dp = p2 - p1;
        let dl = (other.longitude - self.longitude).to_radians();
        let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
        2.0 * EARTH_RADIUS_KM * a.sqrt().min(1.0).asin()
    }
}

/// Where a client was, as far as the GeoIP database knows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Location {
    /// ISO 3166-1 alpha-2 country code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    /// English city name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub city: Option<String>,
    /// The point, where the database has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coordinates: Option<Coordinates>,
    /// When the session was used from here (set when a session records
    /// it; the travel rule measures time from this instant).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::timestamp::option"
    )]
    pub seen_at: Option<OffsetDateTime>,
}

impl Location {
    /// Whether the lookup found nothing at all.
    pub fn is_unknown(&self) -> bool {
        self.country.is_none() && self.city.is_none() && self.coordinates.is_none()
    }

    /// This place, recorded as seen at `at`.
    #[must_use]
    pub fn seen(mut self, at: OffsetDateTime) -> Self {
        self.seen_at = Some(at);
        self
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.city, &self.country) {
            (Some(city), Some(country)) => write!(f, "{city}, {country}"),
            (None, Some(country)) => f.write_str(country),
            (Some(city), None) => f.write_str(city),
            (None, None) => f.write_str("unknown"),
        }
    }
}

/// A move between two uses of one session too fast to be one device.
#[derive(Debug, Clone, PartialEq)]
pub struct Travel {
    /// Where the session was last used.
    pub from: Location,
    /// Where this use comes from.
    pub to: Location,
    /// Great-circle distance, km.
    pub distance_km: f64,
    /// Distance over the time between the two uses, km/h.
    pub speed_kmh: f64,
}

/// The travel from `from` to `to` at `now`, where it is faster than
/// `max_kmh`. Nothing where either place has no coordinates or no time,
/// or where the two accuracy radii cover the distance (the database cannot
/// tell the two places apart).
pub fn impossible_travel(
    from: &Location,
    to: &Location,
    now: OffsetDateTime,
    max_kmh: u32,
) -> Option<Travel> {
    let (a, b) = (from.coordinates?, to.coordinates?);
    let since = from.seen_at?;
    let distance_km = a.distance_km(&b);
    let blur = f64::from(a.accuracy_km.unwrap_or(0).max(b.accuracy_km.unwrap_or(0)));
    if distance_km <= blur {
        return None;
    }
    // A second at least: two uses in the same instant from two places are
    // as impossible as it gets, and the division stays finite.
    let hours = ((now - since).as_seconds_f64()).max(1.0) / 3600.0;
    let speed_kmh = distance_km / hours;
    (speed_kmh > f64::from(max_kmh)).then(|| Travel {
        from: from.clone(),
        to: to.clone(),
        distance_km,
        speed_kmh,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::Duration;

    fn at(lat: f64, lon: f64, radius: Option<u32>) -> Location {
        Location {
            country: Some("XX".into()),
            city: None,
            coordinates: Some(Coordinates {
                latitude: lat,
                longitude: lon,
                accuracy_km: radius,
            }),
            seen_at: None,
        }
    }

    fn t0() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap()
    }

    const PARIS: (f64, f64) = (48.8566, 2.3522);
    const NEW_YORK: (f64, f64) = (40.7128, -74.0060);

    #[test]
    fn paris_to_new_york_is_about_5837_km() {
        let d = at(PARIS.0, PARIS.1, None)
            .coordinates
            .unwrap()
            .distance_km(&at(NEW_YORK.0, NEW_YORK.1, None).coordinates.unwrap());
        assert!((d - 5837.0).abs() < 10.0, "{d}");
    }

    #[test]
    fn antipodes_and_the_same_point_stay_finite() {
        let a = Coordinates {
            latitude: 0.0,
            longitude: 0.0,
            accuracy_km: None,
        };
        let b = Coordinates {
            latitude: 0.0,
            longitude: 180.0,
            accuracy_km: None,
        };
        let half = a.distance_km(&b);
        assert!((half - std::f64::consts::PI * EARTH_RADIUS_KM).abs() < 1.0);
        assert!(a.distance_km(&a).abs() < 1e-9);
    }

    #[test]
    fn an_hour_paris_to_new_york_is_impossible_a_day_is_not() {
        let from = at(PARIS.0, PARIS.1, Some(10)).seen(t0());
        let to = at(NEW_YORK.0, NEW_YORK.1, Some(10));
        let t = impossible_travel(&from, &to, t0() + Duration::hours(1), 1000).unwrap();
        assert!((t.speed_kmh - t.distance_km).abs() < 1.0);
        assert!(impossible_travel(&from, &to, t0() + Duration::hours(24), 1000).is_none());
    }

    #[test]
    fn unknown_places_times_and_blurred_distances_fire_nothing() {
        let from = at(PARIS.0, PARIS.1, None).seen(t0());
        let later = t0() + Duration::minutes(1);
        let unknown = Location {
            country: Some("US".into()),
            ..Location::default()
        };
        assert!(impossible_travel(&from, &unknown, later, 1000).is_none());
        assert!(impossible_travel(&unknown, &from, later, 1000).is_none());
        let never_seen = at(PARIS.0, PARIS.1, None);
        let far = at(NEW_YORK.0, NEW_YORK.1, None);
        assert!(impossible_travel(&never_seen, &far, later, 1000).is_none());
        // 100 km apart, but one place is only known to within 500 km.
        let near = at(PARIS.0 + 0.9, PARIS.1, Some(500));
        assert!(impossible_travel(&from, &near, later, 1000).is_none());
        let sharp = at(PARIS.0 + 0.9, PARIS.1, Some(5));
        assert!(impossible_travel(&from, &sharp, later, 1000).is_some());
    }

    #[test]
    fn a_location_round_trips_through_json() {
        let l = at(PARIS.0, PARIS.1, Some(20)).seen(t0());
        let back: Location = serde_json::from_str(&serde_json::to_string(&l).unwrap()).unwrap();
        assert_eq!(back, l);
        assert_eq!(l.to_string(), "XX");
        assert!(Location::default().is_unknown());
    }
}
