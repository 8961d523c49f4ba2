//! One call across its attempts: the token, the request, its answer read as a verdict, and the
//! retries the policy allows.

use super::*;

/// One chat-button call across its attempts.
pub(super) struct Call<'a> {
    pub(super) chat_id: &'a str,
    pub(super) user_id_type: UserIdType,
    pub(super) bytes: &'a [u8],
    pub(super) attempts: AtomicU32,
    /// An attempt reached the API and got no answer that says what became of it.
    pub(super) unanswered: AtomicBool,
}

impl Inner {
    pub(super) async fn token(&self) -> Result<Arc<Token>, AttemptFailure> {
        self.tokens.get(|| self.fetch_token()).await
    }

    pub(super) async fn fetch_token(&self) -> Result<(Token, Duration), AttemptFailure> {
        let request = TenantTokenRequest {
            app_id: self.app_id.clone(),
            app_secret: self.app_secret.expose().to_owned(),
        };
        let bytes = serde_json::to_vec(&request).map_err(|e| {
            AttemptFailure::Final(CallError::Api {
                code: CODE_NOT_API_JSON,
                msg: format!("cannot encode the token request: {e}"),
                status: 0,
            })
        })?;
        drop(request);
        let sent = self
            .http
            .post(&self.token_url)
            .header(CONTENT_TYPE, JSON_UTF8)
            .body(bytes)
            .send()
            .await;
        let answer = match read(sent).await {
            Ok(answer) => answer,
            Err(f) => {
                self.metrics
                    .request(EndpointLabel::Token, unanswered_outcome(&f));
                // A token request changes nothing, so an unanswered one is only transient.
                return Err(match f {
                    AttemptFailure::Transient { why } | AttemptFailure::Unanswered { why } => {
                        AttemptFailure::Transient {
                            why: format!("token endpoint: {why}"),
                        }
                    }
                    other => other,
                });
            }
        };
        let result = classify_token(&answer, &[self.app_secret.expose()]);
        self.metrics.request(
            EndpointLabel::Token,
            answered_outcome(&answer, result.as_ref().err()),
        );
        match &result {
            Ok((_, expire)) => debug!(expire_secs = expire.as_secs(), "tenant token fetched"),
            Err(f) => {
                debug!(status = answer.status.as_u16(), failure = %f, "token fetch failed");
            }
        }
        result
    }

    pub(super) async fn try_chat_button(
        &self,
        call: &Call<'_>,
    ) -> Result<Vec<FailedUserReason>, AttemptFailure> {
        call.attempts.fetch_add(1, Ordering::Relaxed);
        let mut token = self.token().await?;
        let mut verdict = self.send_chat_button(call, &token).await;
        if let Verdict::TokenRefused { code, .. } = &verdict {
            // Bots stay broken for hours when a refused token is kept in the cache: drop it,
            // fetch another, and try once more. Once per attempt, so that a later attempt (after
            // a 5xx) may replace a token that expired since.
            debug!(
                code,
                "token refused: fetching a new one and trying once more"
            );
            self.metrics.token_refused();
            self.tokens.evict(&token).await;
            call.attempts.fetch_add(1, Ordering::Relaxed);
            token = self.token().await?;
            verdict = self.send_chat_button(call, &token).await;
        }
        if matches!(verdict, Verdict::Failed(AttemptFailure::Unanswered { .. })) {
            call.unanswered.store(true, Ordering::Relaxed);
        }
        match verdict {
            Verdict::Applied(failed_users) => Ok(failed_users),
            // A token refused right after it was fetched is no stale cache (clock skew, tokens
            // revoked as they are issued): drop it too and leave the rest to the backoff policy,
            // so that the call neither loops nor fails at the first hiccup.
            Verdict::TokenRefused { code, msg, status } => {
                self.metrics.token_refused();
                self.tokens.evict(&token).await;
                Err(AttemptFailure::Transient {
                    why: format!(
                        "a freshly fetched token was refused too (HTTP {status}, code {code}: {msg})"
                    ),
                })
            }
            Verdict::Failed(f) => Err(f),
        }
    }

    /// One HTTP attempt: a rate-limit slot, then the request.
    pub(super) async fn send_chat_button(&self, call: &Call<'_>, token: &Token) -> Verdict {
        let mut stop = self.stop.subscribe();
        tokio::select! {
            () = self.limiter.acquire() => {}
            _ = stop.wait_for(|stopped| *stopped) => {}
        }
        if *stop.borrow() {
            return Verdict::Failed(AttemptFailure::Final(CallError::Stopped));
        }
        let started = Instant::now();
        let sent = self
            .http
            .put(&self.chat_button_url)
            .query(&[("user_id_type", call.user_id_type.as_str())])
            .header(AUTHORIZATION, token.header().clone())
            .header(CONTENT_TYPE, JSON_UTF8)
            .body(call.bytes.to_vec())
            .send()
            .await;
        let answer = match read(sent).await {
            Ok(answer) => answer,
            Err(failure) => {
                debug!(elapsed_ms = started.elapsed().as_millis(), %failure, "chat_button: no answer");
                self.metrics
                    .request(EndpointLabel::ChatButton, unanswered_outcome(&failure));
                return Verdict::Failed(failure);
            }
        };
        let secrets = [token.secret().expose(), self.app_secret.expose()];
        let verdict = classify_chat_button(&answer, call.chat_id, &secrets);
        let outcome = match &verdict {
            Verdict::Applied(_) => answered_outcome(&answer, None),
            Verdict::TokenRefused { .. } => RequestOutcome::TokenRefused,
            Verdict::Failed(f) => answered_outcome(&answer, Some(f)),
        };
        self.metrics.request(EndpointLabel::ChatButton, outcome);
        debug!(
            status = answer.status.as_u16(),
            code = code_of(&answer.body),
            elapsed_ms = started.elapsed().as_millis(),
            verdict = verdict.label(),
            "chat_button answered"
        );
        // The server's window is full for everyone, not just this call: hold back the calls
        // queued behind it too.
        if let Verdict::Failed(AttemptFailure::RateLimited { wait: Some(wait) }) = &verdict {
            self.limiter
                .pause_until(Instant::now() + (*wait).min(MAX_RESET_WAIT));
        }
        verdict
    }

    pub(super) fn note_retry(
        &self,
        endpoint: EndpointLabel,
        failure: &AttemptFailure,
        wait: Duration,
    ) {
        self.metrics.retry(endpoint);
        debug!(
            what = endpoint.as_str(),
            wait_ms = wait.as_millis(),
            failure = %failure,
            "retrying after a transient failure"
        );
    }
}
