//! Configuration from environment variables (and an optional `.env` file, read by `main`).
//!
//! Every setting has a default that runs a development server with no services; every bad
//! value stops the server at start with one line naming the variable. The README and
//! `.env.example` list them all.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use refsys_core::revocation::Revocation;
use refsys_core::{AllowedRegions, InviteePhones, JwtKeys, Policy};
use refsys_core::{ClientLimits, RateLimit, TrustedProxies};

use crate::listen::ConnectionLimits;

/// Where users live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Database {
    /// A SQLite file (the embedded default).
    Sqlite(String),
    /// A PostgreSQL server.
    Postgres(String),
}

/// Where codes, cooldowns and rate limits live when not in the process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum RedisConfig {
    /// One Redis node (`REDIS_URL`).
    Node(String),
    /// A Redis Cluster, by some or all of its nodes (`REDIS_CLUSTER_URLS`).
    Cluster(Vec<String>),
}

/// Which framework serves the API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Framework {
    /// axum (the default).
    Axum,
    /// actix-web.
    Actix,
}

/// How codes are delivered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum SmsConfig {
    /// Codes go to the log (development only).
    Log,
    /// POST `{phone, message}` to a URL, signed with HMAC-SHA256.
    Webhook {
        /// The gateway's URL.
        url: String,
        /// The HMAC key for the `X-Refsys-Signature` header.
        secret: String,
        /// Request timeout.
        timeout: Duration,
    },
}

/// `EVENTS_WEBHOOK_*`: where events go as Standard Webhooks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct EventsConfig {
    /// `EVENTS_WEBHOOK_URL`: the receiver.
    pub url: String,
    /// `EVENTS_WEBHOOK_SECRET`: `whsec_<base64>`, at least 24 bytes of key.
    pub secret: String,
    /// `EVENTS_WEBHOOK_TIMEOUT`: one attempt's limit; a claimed event is taken up again by
    /// another instance (or this one, restarted) after 4 times this.
    pub timeout: Duration,
    /// `EVENTS_WEBHOOK_MAX_AGE`: how long an event is retried before it is kept as failed.
    pub max_age: Duration,
    /// `EVENTS_RETENTION`: how long delivered events are kept.
    pub retention: Duration,
}

/// `HUMAN_CHECK`: what `send_code` asks for under SMS-budget pressure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum HumanCheckConfig {
    /// Never ask.
    Off,
    /// The built-in proof of work, `HUMAN_CHECK_POW_DIFFICULTY` bits.
    Pow {
        /// Leading zero bits.
        difficulty: u8,
    },
    /// Cloudflare Turnstile or hCaptcha, checked with the provider.
    Captcha {
        /// `turnstile` or `hcaptcha`.
        provider: &'static str,
        /// The widget's site key.
        site_key: String,
        /// The secret for `siteverify`.
        secret: String,
        /// `HUMAN_CHECK_VERIFY_URL`: another `siteverify` URL (a proxy).
        verify_url: Option<String>,
    },
}

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LogFormat {
    /// Human-readable.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// The whole server configuration.
#[derive(Debug)]
pub(crate) struct Config {
    /// `REFSYS_BIND`.
    pub bind: SocketAddr,
    /// `REFSYS_ENV=production`.
    pub production: bool,
    /// `REFSYS_FRAMEWORK` or `--framework`.
    pub framework: Framework,
    /// `DATABASE_URL`.
    pub database: Database,
    /// `REDIS_URL` or `REDIS_CLUSTER_URLS` (at most one of them).
    pub redis: Option<RedisConfig>,
    /// `REDIS_PREFIX`.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub redis_prefix: String,
    /// The signing keys; `None` means "generate a random secret" (development only).
    pub keys: Option<JwtKeys>,
    /// OTP, token and region rules.
    pub policy: Policy,
    /// `RATE_LIMIT_SEND_CODE`, `RATE_LIMIT_VERIFY_CODE`, `RATE_LIMIT_USE_INVITE_CODE`,
    /// `TRUSTED_PROXIES`, `BODY_READ_TIMEOUT`.
    pub client_limits: ClientLimits,
    /// `HEADER_READ_TIMEOUT`, `MAX_CONNECTIONS`, `LISTEN_BACKLOG`.
    pub connections: ConnectionLimits,
    /// `SMS_SENDER`.
    pub sms: SmsConfig,
    /// `HUMAN_CHECK` and its settings.
    pub human_check: HumanCheckConfig,
    /// `EVENTS_WEBHOOK_URL` and its settings; `None`: no events are recorded.
    pub events: Option<EventsConfig>,
    /// `LOG_FORMAT`.
    pub log_format: LogFormat,
    /// `REVOCATION`: `instant` (default) or `stateless`.
    pub revocation: Revocation,
}

/// A bad setting: `REFSYS_X: why`.
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {var}: {reason}")]
pub(crate) struct ConfigError {
    /// The environment variable.
    pub var: &'static str,
    /// What is wrong with its value.
    pub reason: String,
}

fn error(var: &'static str, reason: impl std::fmt::Display) -> ConfigError {
    ConfigError {
        var,
        reason: reason.to_string(),
    }
}

/// Reads variables through `lookup` (the process environment in `main`, a map in tests).
struct Env<F>(F);

impl<F: Fn(&str) -> Option<String>> Env<F> {
    fn get(&self, var: &str) -> Option<String> {
        (self.0)(var)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    fn parse<T: FromStr>(&self, var: &'static str, default: T) -> Result<T, ConfigError>
    where
        T::Err: std::fmt::Display,
    {
        match self.get(var) {
            None => Ok(default),
            Some(value) => value
                .parse()
                .map_err(|e| error(var, format!("`{value}` is not valid: {e}"))),
        }
    }

    fn secs(&self, var: &'static str, default: u64) -> Result<Duration, ConfigError> {
        self.parse(var, default).map(Duration::from_secs)
    }
}

impl Config {
    /// Reads the configuration from the process environment; `framework_flag` (from
    /// `--framework`) wins over `REFSYS_FRAMEWORK`.
    pub(crate) fn from_env(framework_flag: Option<&str>) -> Result<Self, ConfigError> {
        Self::from_lookup(|var| std::env::var(var).ok(), framework_flag)
    }

    /// Reads the configuration through `lookup`.
    pub(crate) fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
        framework_flag: Option<&str>,
    ) -> Result<Self, ConfigError> {
        let env = Env(lookup);
        let production = match env.get("REFSYS_ENV").as_deref() {
            None | Some("development") => false,
            Some("production") => true,
            Some(other) => {
                return Err(error(
                    "REFSYS_ENV",
                    format!("`{other}`: expected development or production"),
                ));
            }
        };
        let bind = env.parse("REFSYS_BIND", SocketAddr::from(([127, 0, 0, 1], 8000)))?;
        let framework = match framework_flag
            .map(str::to_owned)
            .or(env.get("REFSYS_FRAMEWORK"))
        {
            None => Framework::Axum,
            Some(name) => match name.as_str() {
                "axum" => Framework::Axum,
                "actix" => Framework::Actix,
                other => {
                    return Err(error(
                        "REFSYS_FRAMEWORK",
                        format!("`{other}`: expected axum or actix"),
                    ));
                }
            },
        };
        let database = match env.get("DATABASE_URL") {
            None => Database::Sqlite("sqlite:refsys.db".into()),
            Some(url) if url.starts_with("sqlite:") => Database::Sqlite(url),
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                if !cfg!(feature = "postgres") {
                    return Err(error(
                        "DATABASE_URL",
                        "this build has no PostgreSQL support; build refsys-server with --features postgres",
                    ));
                }
                Database::Postgres(url)
            }
            Some(_) => {
                return Err(error(
                    "DATABASE_URL",
                    "expected a sqlite: or postgres:// URL",
                ));
            }
        };
        let redis = read_redis(&env)?;
        let keys = read_keys(&env, production)?;
        let policy = read_policy(&env)?;
        let sms = match env.get("SMS_SENDER").as_deref() {
            None | Some("log") => {
                if production {
                    return Err(error(
                        "SMS_SENDER",
                        "the log sender writes codes to the log; set SMS_SENDER=webhook in production",
                    ));
                }
                SmsConfig::Log
            }
            Some("webhook") => SmsConfig::Webhook {
                url: env
                    .get("SMS_WEBHOOK_URL")
                    .filter(|u| u.starts_with("http://") || u.starts_with("https://"))
                    .ok_or_else(|| {
                        error(
                            "SMS_WEBHOOK_URL",
                            "required (an http(s) URL) with SMS_SENDER=webhook",
                        )
                    })?,
                secret: env
                    .get("SMS_WEBHOOK_SECRET")
                    .filter(|s| s.len() >= 16)
                    .ok_or_else(|| {
                        error(
                            "SMS_WEBHOOK_SECRET",
                            "required (at least 16 characters) with SMS_SENDER=webhook",
                        )
                    })?,
                timeout: env.secs("SMS_WEBHOOK_TIMEOUT", 5)?,
            },
            Some(other) => {
                return Err(error(
                    "SMS_SENDER",
                    format!("`{other}`: expected log or webhook"),
                ));
            }
        };
        let client_limits = read_client_limits(&env)?;
        let connections = read_connection_limits(&env)?;
        let human_check = read_human_check(&env)?;
        let events = read_events(&env)?;
        let revocation = match env.get("REVOCATION").as_deref() {
            None | Some("instant") => Revocation::Instant,
            Some("stateless") => Revocation::Stateless,
            Some(other) => {
                return Err(error(
                    "REVOCATION",
                    format!("`{other}`: expected instant or stateless"),
                ));
            }
        };
        let log_format = match env.get("LOG_FORMAT").as_deref() {
            None | Some("pretty") => LogFormat::Pretty,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(error(
                    "LOG_FORMAT",
                    format!("`{other}`: expected pretty or json"),
                ));
            }
        };
        Ok(Self {
            bind,
            production,
            framework,
            database,
            redis,
            redis_prefix: env.get("REDIS_PREFIX").unwrap_or_else(|| "refsys:".into()),
            keys,
            policy,
            client_limits,
            connections,
            sms,
            human_check,
            events,
            log_format,
            revocation,
        })
    }
}

/// `EVENTS_WEBHOOK_URL` with `EVENTS_WEBHOOK_SECRET` (both or neither) and the delivery
/// settings.
fn read_events<F: Fn(&str) -> Option<String>>(
    env: &Env<F>,
) -> Result<Option<EventsConfig>, ConfigError> {
    let (url, secret) = match (
        env.get("EVENTS_WEBHOOK_URL"),
        env.get("EVENTS_WEBHOOK_SECRET"),
    ) {
        (None, None) => return Ok(None),
        (Some(_), None) => {
            return Err(error(
                "EVENTS_WEBHOOK_SECRET",
                "required with EVENTS_WEBHOOK_URL (whsec_ and the base64 of at least 24 random bytes)",
            ));
        }
        (None, Some(_)) => {
            return Err(error(
                "EVENTS_WEBHOOK_URL",
                "required with EVENTS_WEBHOOK_SECRET (an http(s) URL)",
            ));
        }
        (Some(url), Some(secret)) => (url, secret),
    };
    if !(url.starts_with("http://") || url.starts_with("https://"))
        || url.parse::<reqwest::Url>().is_err()
    {
        return Err(error("EVENTS_WEBHOOK_URL", "expected an http(s) URL"));
    }
    let key = secret
        .strip_prefix("whsec_")
        .and_then(|b64| {
            base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64).ok()
        })
        .ok_or_else(|| {
            error(
                "EVENTS_WEBHOOK_SECRET",
                "expected whsec_ followed by base64 (as Standard Webhooks secrets are written)",
            )
        })?;
    if key.len() < 24 {
        return Err(error(
            "EVENTS_WEBHOOK_SECRET",
            format!(
                "the key is {} bytes; use at least 24 random bytes",
                key.len()
            ),
        ));
    }
    let timeout = env.secs("EVENTS_WEBHOOK_TIMEOUT", 15)?;
    let max_age = env.secs("EVENTS_WEBHOOK_MAX_AGE", 3 * 24 * 3600)?;
    let retention = env.secs("EVENTS_RETENTION", 7 * 24 * 3600)?;
    for (var, value) in [
        ("EVENTS_WEBHOOK_TIMEOUT", timeout),
        ("EVENTS_WEBHOOK_MAX_AGE", max_age),
    ] {
        if value.is_zero() {
            return Err(error(var, "must be at least 1 second"));
        }
    }
    Ok(Some(EventsConfig {
        url,
        secret,
        timeout,
        max_age,
        retention,
    }))
}

/// `HUMAN_CHECK` (`pow`, the default; `turnstile`; `hcaptcha`; `off`) and its settings.
fn read_human_check<F: Fn(&str) -> Option<String>>(
    env: &Env<F>,
) -> Result<HumanCheckConfig, ConfigError> {
    let captcha = |provider: &'static str, site_var: &'static str, secret_var: &'static str| {
        let required = |var: &'static str| {
            env.get(var)
                .ok_or_else(|| error(var, format!("required with HUMAN_CHECK={provider}")))
        };
        let verify_url = env.get("HUMAN_CHECK_VERIFY_URL");
        if verify_url
            .as_deref()
            .is_some_and(|u| !u.starts_with("https://") && !u.starts_with("http://"))
        {
            return Err(error("HUMAN_CHECK_VERIFY_URL", "expected an http(s) URL"));
        }
        Ok(HumanCheckConfig::Captcha {
            provider,
            site_key: required(site_var)?,
            secret: required(secret_var)?,
            verify_url,
        })
    };
    match env.get("HUMAN_CHECK").as_deref() {
        None | Some("pow") => {
            let difficulty: u8 = env.parse("HUMAN_CHECK_POW_DIFFICULTY", 16)?;
            if !(1..=refsys_core::human::MAX_POW_DIFFICULTY).contains(&difficulty) {
                return Err(error(
                    "HUMAN_CHECK_POW_DIFFICULTY",
                    format!(
                        "must be 1 to {} bits",
                        refsys_core::human::MAX_POW_DIFFICULTY
                    ),
                ));
            }
            Ok(HumanCheckConfig::Pow { difficulty })
        }
        Some("turnstile") => captcha("turnstile", "TURNSTILE_SITE_KEY", "TURNSTILE_SECRET_KEY"),
        Some("hcaptcha") => captcha("hcaptcha", "HCAPTCHA_SITE_KEY", "HCAPTCHA_SECRET"),
        Some("off") => Ok(HumanCheckConfig::Off),
        Some(other) => Err(error(
            "HUMAN_CHECK",
            format!("`{other}`: expected pow, turnstile, hcaptcha or off"),
        )),
    }
}

/// `REDIS_URL` (one node) or `REDIS_CLUSTER_URLS` (comma-separated node URLs of a cluster).
fn read_redis<F: Fn(&str) -> Option<String>>(
    env: &Env<F>,
) -> Result<Option<RedisConfig>, ConfigError> {
    let is_redis_url = |url: &str| url.starts_with("redis://") || url.starts_with("rediss://");
    let redis = match (env.get("REDIS_URL"), env.get("REDIS_CLUSTER_URLS")) {
        (None, None) => return Ok(None),
        (Some(_), Some(_)) => {
            return Err(error(
                "REDIS_CLUSTER_URLS",
                "set either REDIS_URL (one node) or REDIS_CLUSTER_URLS (a cluster), not both",
            ));
        }
        (Some(url), None) => {
            if !is_redis_url(&url) {
                return Err(error("REDIS_URL", "expected a redis:// or rediss:// URL"));
            }
            RedisConfig::Node(url)
        }
        (None, Some(list)) => {
            let urls: Vec<String> = list
                .split(',')
                .map(str::trim)
                .filter(|url| !url.is_empty())
                .map(str::to_owned)
                .collect();
            if urls.is_empty() || !urls.iter().all(|url| is_redis_url(url)) {
                return Err(error(
                    "REDIS_CLUSTER_URLS",
                    "expected comma-separated redis:// or rediss:// URLs of cluster nodes",
                ));
            }
            RedisConfig::Cluster(urls)
        }
    };
    if !cfg!(feature = "redis") {
        let var = match redis {
            RedisConfig::Node(_) => "REDIS_URL",
            RedisConfig::Cluster(_) => "REDIS_CLUSTER_URLS",
        };
        return Err(error(
            var,
            "this build has no Redis support; build refsys-server with --features redis",
        ));
    }
    Ok(Some(redis))
}

fn read_keys<F: Fn(&str) -> Option<String>>(
    env: &Env<F>,
    production: bool,
) -> Result<Option<JwtKeys>, ConfigError> {
    let algorithm = env.get("JWT_ALGORITHM").unwrap_or_else(|| "HS256".into());
    let read = |var: &'static str| -> Result<Vec<u8>, ConfigError> {
        let path = PathBuf::from(
            env.get(var)
                .ok_or_else(|| error(var, format!("required with JWT_ALGORITHM={algorithm}")))?,
        );
        std::fs::read(&path).map_err(|e| error(var, format!("{}: {e}", path.display())))
    };
    match algorithm.as_str() {
        "HS256" => match env.get("JWT_SECRET") {
            Some(secret) => JwtKeys::hs256(secret)
                .map(Some)
                .map_err(|e| error("JWT_SECRET", e)),
            None if production => Err(error(
                "JWT_SECRET",
                "required when REFSYS_ENV=production (at least 32 bytes)",
            )),
            None => Ok(None),
        },
        "RS256" => JwtKeys::rs256_pem(
            &read("JWT_PRIVATE_KEY_FILE")?,
            &read("JWT_PUBLIC_KEY_FILE")?,
        )
        .map(Some)
        .map_err(|e| error("JWT_PRIVATE_KEY_FILE", e)),
        "EdDSA" => JwtKeys::eddsa_pem(
            &read("JWT_PRIVATE_KEY_FILE")?,
            &read("JWT_PUBLIC_KEY_FILE")?,
        )
        .map(Some)
        .map_err(|e| error("JWT_PRIVATE_KEY_FILE", e)),
        other => Err(error(
            "JWT_ALGORITHM",
            format!("`{other}`: expected HS256, RS256 or EdDSA"),
        )),
    }
}

/// Per-client limits: calls per IP per minute and invite-code attempts per user per hour
/// (0 = no limit), and the proxies whose `X-Forwarded-For` is believed.
fn read_client_limits<F: Fn(&str) -> Option<String>>(
    env: &Env<F>,
) -> Result<ClientLimits, ConfigError> {
    let defaults = ClientLimits::default();
    let per_minute = |var: &'static str, default: Option<RateLimit>| {
        let default = default.map_or(0, |limit| limit.max);
        env.parse(var, default)
            .map(|max| (max > 0).then(|| RateLimit::per_minute(max)))
    };
    let per_hour = |var: &'static str, default: Option<RateLimit>| {
        let default = default.map_or(0, |limit| limit.max);
        env.parse(var, default)
            .map(|max| (max > 0).then(|| RateLimit::per_hour(max)))
    };
    let proxies = match env.get("TRUSTED_PROXIES") {
        None => TrustedProxies::none(),
        Some(list) => TrustedProxies::new(list.split(',').map(str::trim).filter(|s| !s.is_empty()))
            .map_err(|e| error("TRUSTED_PROXIES", e))?,
    };
    let body_read_timeout = env.secs("BODY_READ_TIMEOUT", defaults.body_read_timeout.as_secs())?;
    if body_read_timeout.is_zero() {
        return Err(error("BODY_READ_TIMEOUT", "must be at least 1 second"));
    }
    let mut allowed_origins = Vec::new();
    for origin in env
        .get("CORS_ALLOWED_ORIGINS")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|o| !o.is_empty())
    {
        let (scheme, host) = origin.split_once("://").unwrap_or_default();
        if !matches!(scheme, "http" | "https") || host.is_empty() || host.contains('/') {
            return Err(error(
                "CORS_ALLOWED_ORIGINS",
                format!("`{origin}`: expected an origin such as https://app.example"),
            ));
        }
        allowed_origins.push(origin.to_owned());
    }
    Ok(ClientLimits {
        send_code: per_minute("RATE_LIMIT_SEND_CODE", defaults.send_code)?,
        verify_code: per_minute("RATE_LIMIT_VERIFY_CODE", defaults.verify_code)?,
        use_invite_code: per_hour("RATE_LIMIT_USE_INVITE_CODE", defaults.use_invite_code)?,
        send_code_per_phone: per_hour(
            "RATE_LIMIT_SEND_CODE_PER_PHONE",
            defaults.send_code_per_phone,
        )?,
        verify_code_per_phone: per_hour(
            "RATE_LIMIT_VERIFY_CODE_PER_PHONE",
            defaults.verify_code_per_phone,
        )?,
        trusted_proxies: proxies,
        allowed_origins,
        body_read_timeout,
    })
}

fn read_connection_limits<F: Fn(&str) -> Option<String>>(
    env: &Env<F>,
) -> Result<ConnectionLimits, ConfigError> {
    let defaults = ConnectionLimits::default();
    let header_read_timeout = env.secs(
        "HEADER_READ_TIMEOUT",
        defaults.header_read_timeout.as_secs(),
    )?;
    if header_read_timeout.is_zero() {
        return Err(error("HEADER_READ_TIMEOUT", "must be at least 1 second"));
    }
    let max_connections: usize = env.parse("MAX_CONNECTIONS", 0)?;
    let backlog: u32 = env.parse("LISTEN_BACKLOG", defaults.backlog)?;
    if backlog == 0 {
        return Err(error("LISTEN_BACKLOG", "must be at least 1"));
    }
    Ok(ConnectionLimits {
        header_read_timeout,
        max_connections: (max_connections > 0).then_some(max_connections),
        backlog,
    })
}

fn read_policy<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Policy, ConfigError> {
    let defaults = Policy::default();
    let otp = defaults.otp();
    let regions: AllowedRegions = env.parse("ALLOWED_REGIONS", AllowedRegions::all())?;
    let sms_budget = env.parse(
        "SMS_BUDGET_PER_HOUR",
        defaults.sms_budget().map_or(0, |budget| budget.max),
    )?;
    let mut builder = Policy::builder()
        .code_length(env.parse("OTP_CODE_LENGTH", otp.code_length)?)
        .code_ttl(env.secs("OTP_TTL", otp.code_ttl.as_secs())?)
        .resend_cooldown(env.secs("OTP_RESEND_COOLDOWN", otp.resend_cooldown.as_secs())?)
        .max_attempts(env.parse("OTP_MAX_ATTEMPTS", otp.max_attempts)?)
        .max_sends(
            env.parse("OTP_MAX_SENDS", otp.max_sends_per_window)?,
            env.secs("OTP_SEND_WINDOW", otp.send_window.as_secs())?,
        )
        .max_failures(env.parse("OTP_MAX_FAILURES", otp.max_failures)?)
        .lockout(env.secs("OTP_LOCKOUT", otp.lockout.as_secs())?)
        .sms_budget((sms_budget > 0).then(|| RateLimit::per_hour(sms_budget)))
        .sms_prefix_share(env.parse("SMS_BUDGET_PREFIX_SHARE", defaults.sms_prefix_share())?)
        .human_check_at(env.parse("HUMAN_CHECK_AT", defaults.human_check_at())?)
        .access_ttl(env.secs("ACCESS_TOKEN_TTL", defaults.access_ttl().as_secs())?)
        .refresh_ttl(env.secs("REFRESH_TOKEN_TTL", defaults.refresh_ttl().as_secs())?)
        .refresh_reuse_grace(env.secs(
            "REFRESH_REUSE_GRACE",
            defaults.refresh_reuse_grace().as_secs(),
        )?)
        .regions(regions)
        .profile_invitees_limit(
            env.parse("PROFILE_INVITEES_LIMIT", defaults.profile_invitees_limit())?,
        )
        .invitee_phones(match env.get("INVITEE_PHONES").as_deref() {
            None | Some("full") => InviteePhones::Full,
            Some("masked") => InviteePhones::Masked,
            Some(other) => {
                return Err(error(
                    "INVITEE_PHONES",
                    format!("`{other}`: expected full or masked"),
                ));
            }
        });
    if let Some(list) = env.get("TEST_PHONES") {
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (phone, code) = entry
                .split_once(':')
                .ok_or_else(|| error("TEST_PHONES", format!("`{entry}`: expected phone:code")))?;
            builder = builder.test_phone(phone.trim(), code.trim());
        }
    }
    builder.build().map_err(|e| {
        let var = match e.setting {
            "code_length" => "OTP_CODE_LENGTH",
            "code_ttl" => "OTP_TTL",
            "max_attempts" => "OTP_MAX_ATTEMPTS",
            "max_sends" => "OTP_MAX_SENDS",
            "max_failures" => "OTP_MAX_FAILURES",
            "lockout" => "OTP_LOCKOUT",
            "sms_budget" => "SMS_BUDGET_PER_HOUR",
            "sms_prefix_share" => "SMS_BUDGET_PREFIX_SHARE",
            "human_check_at" => "HUMAN_CHECK_AT",
            "access_ttl" => "ACCESS_TOKEN_TTL",
            "refresh_ttl" => "REFRESH_TOKEN_TTL",
            _ => "TEST_PHONES",
        };
        error(var, e.reason)
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|var| map.get(var).cloned(), None)
    }

    #[test]
    fn defaults_run_the_embedded_development_server() {
        let config = config(&[]).unwrap();
        assert_eq!(config.bind, SocketAddr::from(([127, 0, 0, 1], 8000)));
        assert_eq!(config.database, Database::Sqlite("sqlite:refsys.db".into()));
        assert_eq!(config.redis, None);
        assert!(config.keys.is_none(), "a random secret is generated");
        assert_eq!(config.sms, SmsConfig::Log);
        assert_eq!(config.framework, Framework::Axum);
        assert_eq!(config.log_format, LogFormat::Pretty);
        assert_eq!(config.revocation, Revocation::Instant);
        assert_eq!(config.client_limits, ClientLimits::default());
        assert_eq!(
            config.client_limits.use_invite_code,
            Some(RateLimit::per_hour(10))
        );
        assert_eq!(config.policy.otp().max_failures, 50);
        assert_eq!(config.policy.otp().max_sends_per_window, 10);
        assert_eq!(
            config.client_limits.send_code_per_phone,
            Some(RateLimit::per_hour(5))
        );
        assert_eq!(
            config.client_limits.verify_code_per_phone,
            Some(RateLimit::per_hour(20))
        );
        assert_eq!(config.connections, ConnectionLimits::default());
        assert_eq!(config.policy.otp().lockout, Duration::from_secs(3600));
        assert_eq!(config.policy.sms_budget(), Some(RateLimit::per_hour(1000)));
        assert_eq!(
            config.policy.sms_prefix_budget(),
            Some(RateLimit::per_hour(250))
        );
        assert_eq!(config.policy.human_check_at(), 50);
        assert_eq!(config.human_check, HumanCheckConfig::Pow { difficulty: 16 });
        assert!(!config.production);
    }

    #[test]
    fn invitee_phones_are_full_unless_masked_is_asked_for() {
        let masked = config(&[("INVITEE_PHONES", "masked")]).unwrap();
        assert_eq!(masked.policy.invitee_phones(), InviteePhones::Masked);
        let full = config(&[("INVITEE_PHONES", "full")]).unwrap();
        assert_eq!(full.policy.invitee_phones(), InviteePhones::Full);
        assert_eq!(
            config(&[]).unwrap().policy.invitee_phones(),
            InviteePhones::Full
        );
        let error = config(&[("INVITEE_PHONES", "hidden")]).unwrap_err();
        assert_eq!(error.var, "INVITEE_PHONES");
        assert!(error.reason.contains("full or masked"), "{}", error.reason);
    }

    #[test]
    fn the_profile_lists_100_invitees_unless_told_otherwise() {
        assert_eq!(config(&[]).unwrap().policy.profile_invitees_limit(), 100);
        let set = config(&[("PROFILE_INVITEES_LIMIT", "7")]).unwrap();
        assert_eq!(set.policy.profile_invitees_limit(), 7);
        let none = config(&[("PROFILE_INVITEES_LIMIT", "0")]).unwrap();
        assert_eq!(none.policy.profile_invitees_limit(), 0);
        for bad in ["-1", "lots", "1.5"] {
            let error = config(&[("PROFILE_INVITEES_LIMIT", bad)]).unwrap_err();
            assert_eq!(error.var, "PROFILE_INVITEES_LIMIT", "{bad}");
        }
    }

    #[test]
    fn revocation_is_instant_unless_stateless_is_asked_for() {
        let stateless = config(&[("REVOCATION", "stateless")]).unwrap();
        assert_eq!(stateless.revocation, Revocation::Stateless);
        let instant = config(&[("REVOCATION", "instant")]).unwrap();
        assert_eq!(instant.revocation, Revocation::Instant);
        let error = config(&[("REVOCATION", "never")]).unwrap_err();
        assert_eq!(error.var, "REVOCATION");
        assert!(
            error.reason.contains("instant or stateless"),
            "{}",
            error.reason
        );
    }

    #[test]
    fn human_checks_are_read_with_their_keys() {
        let off = config(&[("HUMAN_CHECK", "off"), ("HUMAN_CHECK_AT", "0")]).unwrap();
        assert_eq!(off.human_check, HumanCheckConfig::Off);
        assert_eq!(off.policy.human_check_at(), 0);
        let pow = config(&[("HUMAN_CHECK_POW_DIFFICULTY", "20")]).unwrap();
        assert_eq!(pow.human_check, HumanCheckConfig::Pow { difficulty: 20 });
        let turnstile = config(&[
            ("HUMAN_CHECK", "turnstile"),
            ("TURNSTILE_SITE_KEY", "1x00000000000000000000AA"),
            (
                "TURNSTILE_SECRET_KEY",
                "1x0000000000000000000000000000000AA",
            ),
        ])
        .unwrap();
        assert_eq!(
            turnstile.human_check,
            HumanCheckConfig::Captcha {
                provider: "turnstile",
                site_key: "1x00000000000000000000AA".into(),
                secret: "1x0000000000000000000000000000000AA".into(),
                verify_url: None,
            }
        );
        let hcaptcha = config(&[
            ("HUMAN_CHECK", "hcaptcha"),
            ("HCAPTCHA_SITE_KEY", "site"),
            ("HCAPTCHA_SECRET", "secret"),
            ("HUMAN_CHECK_VERIFY_URL", "http://127.0.0.1:9/siteverify"),
        ])
        .unwrap();
        assert!(matches!(
            hcaptcha.human_check,
            HumanCheckConfig::Captcha {
                provider: "hcaptcha",
                verify_url: Some(_),
                ..
            }
        ));
        let share = config(&[("SMS_BUDGET_PREFIX_SHARE", "100")]).unwrap();
        assert_eq!(share.policy.sms_prefix_budget(), None);
        let missing = [
            (&[("HUMAN_CHECK", "turnstile")][..], "TURNSTILE_SITE_KEY"),
            (
                &[("HUMAN_CHECK", "turnstile"), ("TURNSTILE_SITE_KEY", "k")][..],
                "TURNSTILE_SECRET_KEY",
            ),
            (
                &[("HUMAN_CHECK", "hcaptcha"), ("HCAPTCHA_SITE_KEY", "k")][..],
                "HCAPTCHA_SECRET",
            ),
            (
                &[
                    ("HUMAN_CHECK", "hcaptcha"),
                    ("HCAPTCHA_SITE_KEY", "k"),
                    ("HCAPTCHA_SECRET", "s"),
                    ("HUMAN_CHECK_VERIFY_URL", "ftp://x"),
                ][..],
                "HUMAN_CHECK_VERIFY_URL",
            ),
        ];
        for (vars, var) in missing {
            assert_eq!(config(vars).unwrap_err().var, var, "{vars:?}");
        }
    }

    #[test]
    fn production_refuses_missing_secret_and_log_sender() {
        assert_eq!(
            config(&[("REFSYS_ENV", "production")]).unwrap_err().var,
            "JWT_SECRET"
        );
        let secret = ("JWT_SECRET", "0123456789abcdef0123456789abcdef");
        let e = config(&[("REFSYS_ENV", "production"), secret]).unwrap_err();
        assert_eq!(e.var, "SMS_SENDER");
    }

    #[test]
    fn each_bad_value_names_its_variable() {
        let cases: &[(&str, &str)] = &[
            ("REFSYS_BIND", "nope"),
            ("REFSYS_ENV", "staging"),
            ("REFSYS_FRAMEWORK", "rocket"),
            ("DATABASE_URL", "mysql://x"),
            ("REDIS_URL", "http://x"),
            ("REDIS_CLUSTER_URLS", "redis://a:6379,http://b"),
            ("REDIS_CLUSTER_URLS", " , "),
            ("JWT_SECRET", "short"),
            ("JWT_ALGORITHM", "HS512"),
            ("OTP_CODE_LENGTH", "2"),
            ("OTP_TTL", "-5"),
            ("OTP_MAX_ATTEMPTS", "0"),
            ("ACCESS_TOKEN_TTL", "abc"),
            ("ALLOWED_REGIONS", "BY,XX"),
            ("TEST_PHONES", "+375291000001"),
            ("SMS_SENDER", "pigeon"),
            ("LOG_FORMAT", "xml"),
            ("RATE_LIMIT_SEND_CODE", "many"),
            ("RATE_LIMIT_USE_INVITE_CODE", "-1"),
            ("OTP_MAX_FAILURES", "0"),
            ("OTP_MAX_FAILURES", "101"),
            ("OTP_LOCKOUT", "0"),
            ("SMS_BUDGET_PER_HOUR", "lots"),
            ("TRUSTED_PROXIES", "10.0.0.0/99"),
            ("HUMAN_CHECK", "recaptcha"),
            ("HUMAN_CHECK_AT", "101"),
            ("HUMAN_CHECK_POW_DIFFICULTY", "0"),
            ("HUMAN_CHECK_POW_DIFFICULTY", "25"),
            ("SMS_BUDGET_PREFIX_SHARE", "0"),
            ("SMS_BUDGET_PREFIX_SHARE", "150"),
        ];
        for (var, value) in cases {
            let e = config(&[(var, value)]).unwrap_err();
            assert_eq!(e.var, *var, "{var}={value}: {e}");
        }
        let e = config(&[("SMS_SENDER", "webhook")]).unwrap_err();
        assert_eq!(e.var, "SMS_WEBHOOK_URL");
        let e = config(&[("JWT_ALGORITHM", "RS256")]).unwrap_err();
        assert_eq!(e.var, "JWT_PRIVATE_KEY_FILE");
    }

    const EVENTS_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

    #[test]
    fn events_are_off_unless_a_receiver_and_its_secret_are_set() {
        assert_eq!(config(&[]).unwrap().events, None);
        let events = config(&[
            ("EVENTS_WEBHOOK_URL", "https://hooks.example/refsys"),
            ("EVENTS_WEBHOOK_SECRET", EVENTS_SECRET),
        ])
        .unwrap()
        .events
        .unwrap();
        assert_eq!(events.url, "https://hooks.example/refsys");
        assert_eq!(events.secret, EVENTS_SECRET);
        assert_eq!(events.timeout, Duration::from_secs(15));
        assert_eq!(events.max_age, Duration::from_secs(3 * 24 * 3600));
        assert_eq!(events.retention, Duration::from_secs(7 * 24 * 3600));
        let events = config(&[
            ("EVENTS_WEBHOOK_URL", "http://127.0.0.1:9000/"),
            ("EVENTS_WEBHOOK_SECRET", EVENTS_SECRET),
            ("EVENTS_WEBHOOK_TIMEOUT", "2"),
            ("EVENTS_WEBHOOK_MAX_AGE", "3600"),
            ("EVENTS_RETENTION", "0"),
        ])
        .unwrap()
        .events
        .unwrap();
        assert_eq!(
            (events.timeout, events.max_age, events.retention),
            (
                Duration::from_secs(2),
                Duration::from_secs(3600),
                Duration::ZERO
            )
        );
    }

    #[test]
    fn bad_event_settings_name_their_variable() {
        let url = ("EVENTS_WEBHOOK_URL", "https://hooks.example/");
        let secret = ("EVENTS_WEBHOOK_SECRET", EVENTS_SECRET);
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[url], "EVENTS_WEBHOOK_SECRET"),
            (&[secret], "EVENTS_WEBHOOK_URL"),
            (
                &[("EVENTS_WEBHOOK_URL", "ftp://x/"), secret],
                "EVENTS_WEBHOOK_URL",
            ),
            (
                &[("EVENTS_WEBHOOK_URL", "http://"), secret],
                "EVENTS_WEBHOOK_URL",
            ),
            // Not base64, no prefix, a key shorter than 24 bytes.
            (
                &[url, ("EVENTS_WEBHOOK_SECRET", "whsec_not base64!")],
                "EVENTS_WEBHOOK_SECRET",
            ),
            (
                &[
                    url,
                    ("EVENTS_WEBHOOK_SECRET", "C2FVsBQIhrscChlQIMV+b5sSYspob7oD"),
                ],
                "EVENTS_WEBHOOK_SECRET",
            ),
            (
                &[url, ("EVENTS_WEBHOOK_SECRET", "whsec_c2hvcnQ=")],
                "EVENTS_WEBHOOK_SECRET",
            ),
            (
                &[url, secret, ("EVENTS_WEBHOOK_TIMEOUT", "0")],
                "EVENTS_WEBHOOK_TIMEOUT",
            ),
            (
                &[url, secret, ("EVENTS_WEBHOOK_MAX_AGE", "0")],
                "EVENTS_WEBHOOK_MAX_AGE",
            ),
            (
                &[url, secret, ("EVENTS_WEBHOOK_MAX_AGE", "3d")],
                "EVENTS_WEBHOOK_MAX_AGE",
            ),
            (
                &[url, secret, ("EVENTS_RETENTION", "-1")],
                "EVENTS_RETENTION",
            ),
        ];
        for (vars, var) in cases {
            let e = config(vars).unwrap_err();
            assert_eq!(e.var, *var, "{vars:?}: {e}");
        }
    }

    #[test]
    #[cfg(not(feature = "postgres"))]
    fn postgres_needs_the_feature() {
        let e = config(&[("DATABASE_URL", "postgres://postgres@db/refsys")]).unwrap_err();
        assert_eq!(e.var, "DATABASE_URL");
        assert!(e.reason.contains("--features postgres"), "{e}");
    }

    #[test]
    #[cfg(not(feature = "redis"))]
    fn redis_needs_the_feature() {
        let e = config(&[("REDIS_URL", "redis://cache:6379")]).unwrap_err();
        assert_eq!(e.var, "REDIS_URL");
        assert!(e.reason.contains("--features redis"), "{e}");
    }

    #[test]
    #[cfg(not(feature = "redis"))]
    fn redis_cluster_needs_the_feature() {
        let e = config(&[("REDIS_CLUSTER_URLS", "redis://a:6379,redis://b:6379")]).unwrap_err();
        assert_eq!(e.var, "REDIS_CLUSTER_URLS");
        assert!(e.reason.contains("--features redis"), "{e}");
    }

    #[test]
    #[cfg(feature = "redis")]
    fn redis_cluster_urls_are_a_trimmed_list() {
        let three = config(&[(
            "REDIS_CLUSTER_URLS",
            " redis://a:6379, rediss://:secret@b:6380 ,,redis://c:6379 ",
        )])
        .unwrap();
        assert_eq!(
            three.redis,
            Some(RedisConfig::Cluster(vec![
                "redis://a:6379".into(),
                "rediss://:secret@b:6380".into(),
                "redis://c:6379".into(),
            ]))
        );
        let one = config(&[("REDIS_CLUSTER_URLS", "redis://a:6379")]).unwrap();
        assert_eq!(
            one.redis,
            Some(RedisConfig::Cluster(vec!["redis://a:6379".into()]))
        );
    }

    #[test]
    fn redis_url_and_cluster_urls_exclude_each_other() {
        let e = config(&[
            ("REDIS_URL", "redis://cache:6379"),
            ("REDIS_CLUSTER_URLS", "redis://a:6379,redis://b:6379"),
        ])
        .unwrap_err();
        assert_eq!(e.var, "REDIS_CLUSTER_URLS");
        assert!(e.reason.contains("not both"), "{e}");
        assert!(!e.to_string().contains('\n'), "one line: {e}");
    }

    #[test]
    #[cfg(all(feature = "postgres", feature = "redis"))]
    fn settings_are_applied() {
        let config = config(&[
            ("REFSYS_BIND", "0.0.0.0:9000"),
            ("DATABASE_URL", "postgres://postgres@db/refsys"),
            ("REDIS_URL", "redis://cache:6379"),
            ("JWT_SECRET", "0123456789abcdef0123456789abcdef"),
            ("OTP_MAX_ATTEMPTS", "3"),
            ("ALLOWED_REGIONS", "BY"),
            ("TEST_PHONES", "+375291000001:0000, +375291000002:1234"),
            ("SMS_SENDER", "webhook"),
            ("SMS_WEBHOOK_URL", "https://sms.example/send"),
            ("SMS_WEBHOOK_SECRET", "a-long-enough-secret"),
            ("LOG_FORMAT", "json"),
            ("RATE_LIMIT_SEND_CODE", "0"),
            ("RATE_LIMIT_VERIFY_CODE", "100"),
            ("RATE_LIMIT_USE_INVITE_CODE", "5"),
            ("OTP_MAX_FAILURES", "30"),
            ("OTP_LOCKOUT", "900"),
            ("RATE_LIMIT_SEND_CODE_PER_PHONE", "0"),
            ("RATE_LIMIT_VERIFY_CODE_PER_PHONE", "7"),
            ("HEADER_READ_TIMEOUT", "4"),
            ("BODY_READ_TIMEOUT", "6"),
            ("MAX_CONNECTIONS", "500"),
            ("LISTEN_BACKLOG", "64"),
            ("REFRESH_REUSE_GRACE", "0"),
            (
                "CORS_ALLOWED_ORIGINS",
                "https://app.example, http://localhost:3000",
            ),
            ("SMS_BUDGET_PER_HOUR", "0"),
            ("TRUSTED_PROXIES", "10.0.0.0/8, ::1"),
        ])
        .unwrap();
        assert_eq!(
            config.client_limits.use_invite_code,
            Some(RateLimit::per_hour(5))
        );
        assert_eq!(config.policy.otp().max_failures, 30);
        assert_eq!(config.policy.otp().lockout, Duration::from_secs(900));
        assert_eq!(config.client_limits.send_code_per_phone, None);
        assert_eq!(
            config.client_limits.verify_code_per_phone,
            Some(RateLimit::per_hour(7))
        );
        assert_eq!(
            config.client_limits.body_read_timeout,
            Duration::from_secs(6)
        );
        assert_eq!(
            config.connections,
            ConnectionLimits {
                header_read_timeout: Duration::from_secs(4),
                max_connections: Some(500),
                backlog: 64,
            }
        );
        assert_eq!(config.policy.refresh_reuse_grace(), Duration::ZERO);
        assert_eq!(
            config.client_limits.allowed_origins,
            ["https://app.example", "http://localhost:3000"]
        );
        assert_eq!(config.policy.sms_budget(), None, "0 = no budget");
        assert_eq!(config.client_limits.send_code, None);
        assert_eq!(
            config.client_limits.verify_code,
            Some(RateLimit::per_minute(100))
        );
        assert!(
            config
                .client_limits
                .trusted_proxies
                .trusts("10.1.2.3".parse().unwrap())
        );
        assert_eq!(config.bind.port(), 9000);
        assert_eq!(
            config.database,
            Database::Postgres("postgres://postgres@db/refsys".into())
        );
        assert_eq!(
            config.redis,
            Some(RedisConfig::Node("redis://cache:6379".into()))
        );
        assert!(config.keys.is_some());
        assert_eq!(config.policy.otp().max_attempts, 3);
        let test = refsys_core::Phone::parse("+375291000002", config.policy.regions()).unwrap();
        assert_eq!(config.policy.test_code(&test).unwrap().expose(), "1234");
        assert!(matches!(config.sms, SmsConfig::Webhook { .. }));
        assert_eq!(config.log_format, LogFormat::Json);
    }

    #[test]
    fn origins_that_are_not_origins_are_refused() {
        for bad in ["app.example", "https://app.example/", "ftp://x", "https://"] {
            let Err(error) = config(&[("CORS_ALLOWED_ORIGINS", bad)]) else {
                panic!("{bad} was accepted");
            };
            assert_eq!(error.var, "CORS_ALLOWED_ORIGINS");
        }
    }

    #[test]
    fn zero_timeouts_and_backlog_are_refused_naming_the_variable() {
        for var in ["HEADER_READ_TIMEOUT", "BODY_READ_TIMEOUT", "LISTEN_BACKLOG"] {
            let Err(error) = config(&[(var, "0")]) else {
                panic!("{var}=0 was accepted");
            };
            assert_eq!(error.var, var);
        }
    }
}
