//! [`Guard`]: every rule a request's access token passes, in one place —
//! where the token comes from, the validator, the DPoP binding, and the
//! CSRF and origin rules of the cookie. The extractors use it; so does
//! session-server, for every route that authenticates.

use std::sync::Arc;
use std::time::Instant;

use http::HeaderMap;
use session_core::SessionId;
use session_core::keys::AccessClaims;

use crate::csrf::{self, OriginPolicy};
use crate::dpop::{DpopRequest, DpopTarget, DpopVerifier};
use crate::layer::Rejection;
use crate::token::{Scheme, Source, access_token};
use crate::validate::{AuthError, Authenticated, Validator};

/// The rules an access token passes, over one [`Validator`]. Clone it
/// freely: clones share the validator, the origin policy and the DPoP
/// verifier.
#[derive(Debug, Clone)]
pub struct Guard {
    validator: Arc<Validator>,
    origins: Arc<OriginPolicy>,
    dpop: Option<Arc<DpopVerifier>>,
}

impl Guard {
    /// The guard over `validator`: the own origin only
    /// ([`OriginPolicy::default`]), and DPoP-bound tokens checked with
    /// proofs remembered in the validator's session store
    /// ([`DpopVerifier::for_service`]).
    pub fn new(validator: Arc<Validator>) -> Self {
        let dpop = DpopVerifier::for_service(validator.service());
        Self {
            validator,
            origins: Arc::new(OriginPolicy::default()),
            dpop: Some(Arc::new(dpop)),
        }
    }

    /// With these origins allowed on cookie-transport requests.
    #[must_use]
    pub fn with_origins(mut self, origins: OriginPolicy) -> Self {
        self.origins = Arc::new(origins);
        self
    }

    /// With this DPoP verifier; `None`: a DPoP-bound token is never
    /// accepted (and never as a bearer token).
    #[must_use]
    pub fn with_dpop(mut self, dpop: Option<DpopVerifier>) -> Self {
        self.dpop = dpop.map(Arc::new);
        self
    }

    /// The validator.
    pub fn validator(&self) -> &Arc<Validator> {
        &self.validator
    }

    /// The origin policy.
    pub fn origins(&self) -> &OriginPolicy {
        &self.origins
    }

    /// Authenticates a request by its access token ([`access_token`]);
    /// `Ok(None)` when it presents none. A DPoP-bound token (`cnf.jkt`)
    /// counts only as `Authorization: DPoP` with a proof by its key for
    /// `target` carrying its `ath`; as `Bearer` (or a cookie) it is
    /// `invalid_token`, and so is an unbound token sent as `DPoP`.
    /// `need_session` asks for the session even in `stateless` mode. The
    /// CSRF token of a cookie-transport change is the caller's to check
    /// ([`Guard::check_csrf_live`]).
    pub async fn authenticate_optional(
        &self,
        headers: &HeaderMap,
        need_session: bool,
        dpop: &DpopRequest,
        target: DpopTarget,
    ) -> Result<Option<(Arc<Authenticated>, Source)>, Rejection> {
        let Some((token, source, scheme)) = access_token(headers) else {
            return Ok(None);
        };
        let started = Instant::now();
        let result = self.validator.authenticate(token, need_session).await;
        metrics::histogram!("session_validation_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        let auth = match result {
            Ok(a) => a,
            Err(AuthError::Store(e)) => return Err(Rejection::StoreUnavailable(e)),
            Err(_) => return Err(Rejection::InvalidToken),
        };
        check_binding(
            &auth.claims,
            token,
            scheme,
            self.dpop.as_deref().map(|v| (v, dpop, target)),
        )
        .await?;
        Ok(Some((auth, source)))
    }

    /// As [`Guard::authenticate_optional`]; no token is `invalid_token`.
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        need_session: bool,
        dpop: &DpopRequest,
        target: DpopTarget,
    ) -> Result<(Arc<Authenticated>, Source), Rejection> {
        self.authenticate_optional(headers, need_session, dpop, target)
            .await?
            .ok_or(Rejection::InvalidToken)
    }

    /// Checks a proof that comes without an access token (a login or a
    /// refresh binding a session to its key): `Ok(None)` without a `DPoP`
    /// header, the key's thumbprint with a good proof. Without a verifier
    /// a proof is refused.
    pub async fn check_proof(
        &self,
        req: &DpopRequest,
        target: DpopTarget,
        token_endpoint: bool,
    ) -> Result<Option<session_core::dpop::Jkt>, Rejection> {
        match &self.dpop {
            Some(v) => v.check(req, target, None, token_endpoint).await,
            None if req.has_proof() => Err(Rejection::InvalidDpopProof(
                "DPoP proofs are not accepted here".into(),
            )),
            None => Ok(None),
        }
    }

    /// The origin rules of cookie transport ([`OriginPolicy::check`]).
    pub fn check_origin(&self, headers: &HeaderMap) -> Result<(), Rejection> {
        self.origins.check(headers)
    }

    /// The CSRF check against the token of refresh `generation`
    /// ([`csrf::check_token`]).
    pub fn check_csrf(
        &self,
        headers: &HeaderMap,
        session_id: &SessionId,
        generation: u64,
    ) -> Result<(), Rejection> {
        csrf::check_token(
            &self.origins,
            self.validator.service(),
            headers,
            session_id,
            generation,
        )
    }

    /// The CSRF check of a change made with the access-token cookie,
    /// against the session's live generation ([`csrf::check_token_live`]).
    pub async fn check_csrf_live(
        &self,
        headers: &HeaderMap,
        session_id: &SessionId,
    ) -> Result<(), Rejection> {
        csrf::check_token_live(&self.origins, self.validator.service(), headers, session_id).await
    }
}

/// The DPoP binding rule: a bound token only as `DPoP` with a proof by its
/// key (checked by `dpop`, when there is a verifier); an unbound token
/// never as `DPoP`.
pub(crate) async fn check_binding(
    claims: &AccessClaims,
    token: &str,
    scheme: Option<Scheme>,
    dpop: Option<(&DpopVerifier, &DpopRequest, DpopTarget)>,
) -> Result<(), Rejection> {
    match (&claims.cnf, scheme) {
        (None, Some(Scheme::Dpop)) | (Some(_), None | Some(Scheme::Bearer)) => {
            Err(Rejection::InvalidToken)
        }
        (Some(cnf), Some(Scheme::Dpop)) => {
            let Some((verifier, req, target)) = dpop else {
                return Err(Rejection::InvalidToken);
            };
            let proven = verifier
                .check(req, target, Some(token), false)
                .await?
                .ok_or_else(|| Rejection::InvalidDpopProof("a DPoP proof is required".into()))?;
            if proven != cnf.jkt {
                return Err(Rejection::InvalidDpopProof(
                    "the DPoP proof is not by the token's key".into(),
                ));
            }
            Ok(())
        }
        (None, _) => Ok(()),
    }
}
