-- GeoIP location of a session's last use, contract v1.1.
--
-- JSON of session_core::geo::Location (country, city, coordinates and when
-- the session was used from there); NULL where no GeoIP database is
-- configured or it did not know the address.
ALTER TABLE sessions ADD COLUMN location TEXT CHECK (location IS NULL OR json_valid(location));
