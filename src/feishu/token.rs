//! API client stage: the tenant access token cache. One fetch at a time (concurrent calls wait
//! for it instead of each asking), reused until a margin before it expires, and dropped when
//! the API refuses it.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::HeaderValue;
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::secret::Secret;

/// Refresh this long before the token expires. Well under the 30 minutes within which Feishu
/// hands back the same token, so a refresh gets a new one; a few minutes, like the official SDKs.
pub const REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);

/// A tenant token, and the `Authorization` value that carries it.
pub struct Token {
    value: Secret,
    /// Marked sensitive, so that hyper and reqwest never show it either.
    header: HeaderValue,
}

impl Token {
    /// `None` when the value cannot go in a header (the token endpoint sent something odd).
    pub fn new(value: String) -> Option<Token> {
        let mut header = HeaderValue::from_str(&format!("Bearer {value}")).ok()?;
        header.set_sensitive(true);
        Some(Token {
            value: Secret::new(value),
            header,
        })
    }

    pub fn header(&self) -> &HeaderValue {
        &self.header
    }

    pub fn secret(&self) -> &Secret {
        &self.value
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token({:?})", self.value)
    }
}

/// How long a token that has `expire` left may be used: `expire` minus the margin, or half of
/// a lifetime shorter than twice the margin (a test server's short-lived tokens).
pub fn usable_for(expire: Duration) -> Duration {
    expire - REFRESH_MARGIN.min(expire / 2)
}

struct Cached {
    token: Arc<Token>,
    refresh_at: Instant,
}

#[derive(Default)]
pub struct TokenCache {
    // A tokio mutex, held across the fetch on purpose: that is what makes it one fetch at a time.
    slot: Mutex<Option<Cached>>,
}

impl TokenCache {
    /// The cached token while it is fresh, else the one `fetch` gets (with its `expire`).
    pub async fn get<F, Fut, E>(&self, fetch: F) -> Result<Arc<Token>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(Token, Duration), E>>,
    {
        let mut slot = self.slot.lock().await;
        if let Some(cached) = slot.as_ref()
            && Instant::now() < cached.refresh_at
        {
            return Ok(cached.token.clone());
        }
        // Counted from before the request: `expire` is counted from when the server answered.
        let asked_at = Instant::now();
        let (token, expire) = fetch().await?;
        let token = Arc::new(token);
        *slot = Some(Cached {
            token: token.clone(),
            refresh_at: asked_at + usable_for(expire),
        });
        Ok(token)
    }

    /// Drops `refused` if it is still the cached token (another call may have replaced it
    /// already, and that newer token must stay). Returns whether it was dropped.
    pub async fn evict(&self, refused: &Arc<Token>) -> bool {
        let mut slot = self.slot.lock().await;
        if slot
            .as_ref()
            .is_some_and(|c| Arc::ptr_eq(&c.token, refused))
        {
            *slot = None;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn token(n: u32) -> Token {
        Token::new(format!("t-{n}")).expect("a header-safe token")
    }

    #[test]
    fn the_margin_is_five_minutes_or_half_a_short_life() {
        assert_eq!(
            usable_for(Duration::from_secs(7200)),
            Duration::from_secs(6900)
        );
        assert_eq!(usable_for(Duration::from_secs(10)), Duration::from_secs(5));
        assert_eq!(usable_for(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn a_token_never_prints() {
        let t = token(7);
        assert_eq!(format!("{t:?}"), "Token(***)");
        assert!(!format!("{:?}", t.header()).contains("t-7"));
        assert!(Token::new("t-\n".to_owned()).is_none());
    }

    #[tokio::test]
    async fn one_fetch_serves_concurrent_callers_and_eviction_forces_another() {
        let cache = Arc::new(TokenCache::default());
        let fetches = Arc::new(AtomicU32::new(0));
        let get = |cache: Arc<TokenCache>, fetches: Arc<AtomicU32>| async move {
            cache
                .get(|| async {
                    let n = fetches.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    Ok::<_, ()>((token(n), Duration::from_secs(7200)))
                })
                .await
                .expect("a token")
        };
        let tasks: Vec<_> = (0..5)
            .map(|_| tokio::spawn(get(cache.clone(), fetches.clone())))
            .collect();
        let mut tokens = Vec::new();
        for t in tasks {
            tokens.push(t.await.expect("task"));
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        assert!(tokens.iter().all(|t| Arc::ptr_eq(t, &tokens[0])));

        assert!(cache.evict(&tokens[0]).await);
        assert!(!cache.evict(&tokens[0]).await, "already gone");
        let fresh = get(cache.clone(), fetches.clone()).await;
        assert_eq!(fresh.secret().expose(), "t-1");
        assert!(!cache.evict(&tokens[0]).await, "a newer token stays");
    }

    #[tokio::test]
    async fn a_token_past_its_margin_is_fetched_again() {
        let cache = TokenCache::default();
        let fetch = |n: u32| move || async move { Ok::<_, ()>((token(n), Duration::ZERO)) };
        let a = cache.get(fetch(1)).await.expect("a token");
        let b = cache.get(fetch(2)).await.expect("a token");
        assert_eq!((a.secret().expose(), b.secret().expose()), ("t-1", "t-2"));
    }
}
