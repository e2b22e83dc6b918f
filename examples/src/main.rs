//! `refsys-server`: the documented refsys API, its web UI and OpenAPI, over axum or actix-web.
//!
//! With no configuration it runs on 127.0.0.1:8000 on the embedded default (a SQLite file and
//! in-process OTP store, codes written to the log); see the README and `.env.example` for
//! PostgreSQL + Redis and every setting.
#![forbid(unsafe_code)]

mod admin;
mod config;
mod events;
mod listen;
mod serve;
mod webhook;

use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use config::{Config, Database, HumanCheckConfig, LogFormat, RedisConfig, SmsConfig};
use refsys_core::captcha::SiteVerify;
#[cfg(feature = "postgres")]
use refsys_core::postgres::PgUserStore;
#[cfg(feature = "redis")]
use refsys_core::redis_store::{RedisOtpStore, RedisRateLimitStore};
use refsys_core::{
    EventDelivery, JwtKeys, LogSender, MemoryOtpStore, MemoryRateLimitStore, OtpStore, ProofOfWork,
    RateLimitStore, ReferralService, SmsSender, StoreError, UserStore, sqlite::SqliteUserStore,
};
use tracing_subscriber::EnvFilter;

/// The documented refsys API, its web UI and OpenAPI, over axum or actix-web.
///
/// Configuration comes from environment variables or a `.env` file (see `.env.example`).
#[derive(Debug, Parser)]
#[command(name = "refsys-server", version)]
struct Cli {
    /// The framework serving the API: axum or actix (default: REFSYS_FRAMEWORK, else axum).
    #[arg(long, value_name = "axum|actix")]
    framework: Option<String>,
    /// With no command, the server runs.
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Operator commands on the server's database, with the server's configuration.
    #[command(subcommand)]
    Admin(admin::Admin),
}

fn main() -> ExitCode {
    // A missing .env is fine; a broken one is not.
    if let Err(e) = dotenvy::dotenv()
        && !e.not_found()
    {
        eprintln!("configuration error: .env: {e}");
        return ExitCode::FAILURE;
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Usage errors exit 2, `--help` and `--version` 0.
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    let config = match Config::from_env(cli.framework.as_deref()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(Command::Admin(command)) = cli.command {
        // An admin command prints its answer and writes no log.
        return runtime.block_on(admin::run(&config, command));
    }
    init_logging(config.log_format);
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    // actix-web's HTTP/1 dispatcher logs every request it cannot parse at ERROR, though it has
    // answered 400 and the mistake is the client's: off unless RUST_LOG says otherwise.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,actix_http::h1::dispatcher=off"));
    // Colours only on a terminal: not in files, pipes or `docker logs`.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi);
    match format {
        LogFormat::Pretty => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// Builds the service from the configuration and serves it until SIGINT/SIGTERM.
async fn run(config: Config) -> Result<(), Box<dyn std::error::Error>> {
    let keys = match config.keys.clone() {
        Some(keys) => keys,
        None => {
            tracing::warn!(
                "JWT_SECRET is not set: using a random secret; tokens die with this process \
                 (development only; set JWT_SECRET)"
            );
            JwtKeys::hs256_random()
        }
    };
    let sms: Box<dyn SmsSender> = match &config.sms {
        SmsConfig::Log => {
            tracing::warn!(
                "SMS_SENDER=log: verification codes are written to this log (development only)"
            );
            Box::new(LogSender)
        }
        SmsConfig::Webhook {
            url,
            secret,
            timeout,
        } => Box::new(webhook::WebhookSender::new(url.clone(), secret, *timeout)?),
    };
    let service = build_service(&config, keys, sms, Role::Server).await?;
    // The phone-number metadata loads on first use (seconds in a debug build): load it now,
    // not in the first user's request.
    let _ = service.parse_phone("+375291000001");
    tracing::info!(
        bind = %config.bind,
        environment = if config.production { "production" } else { "development" },
        framework = ?config.framework,
        database = match config.database { Database::Sqlite(_) => "sqlite", Database::Postgres(_) => "postgres" },
        otp_store = match config.redis {
            None => "memory",
            Some(RedisConfig::Node(_)) => "redis",
            Some(RedisConfig::Cluster(_)) => "redis-cluster",
        },
        events = if config.events.is_some() { "webhook" } else { "off" },
        "refsys-server starting"
    );
    serve::serve(config.framework, config.bind, &config.connections, service).await
}

/// Who a service is built for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// The server: it delivers the events.
    Server,
    /// An admin command: it records events and leaves their delivery to the servers.
    Admin,
}

pub(crate) async fn build_service(
    config: &Config,
    keys: JwtKeys,
    sms: Box<dyn SmsSender>,
    role: Role,
) -> Result<ReferralService, Box<dyn std::error::Error>> {
    let users = open_users(&config.database).await?;
    let (otps, rate): (Arc<dyn OtpStore>, Arc<dyn RateLimitStore>) = match &config.redis {
        #[cfg(feature = "redis")]
        Some(redis) => {
            // One reconnecting connection (to a node or a cluster), shared by both stores.
            let conn = match redis {
                RedisConfig::Node(url) => refsys_core::redis_store::connect(url)
                    .await
                    .map_err(|e| format!("REDIS_URL: {e}"))?,
                RedisConfig::Cluster(urls) => refsys_core::redis_store::connect_cluster(urls)
                    .await
                    .map_err(|e| format!("REDIS_CLUSTER_URLS: {e}"))?,
            };
            (
                Arc::new(RedisOtpStore::new(conn.clone()).with_prefix(&config.redis_prefix)),
                Arc::new(RedisRateLimitStore::new(conn).with_prefix(&config.redis_prefix)),
            )
        }
        // `Config` refuses REDIS_URL and REDIS_CLUSTER_URLS in a build without the `redis`
        // feature.
        #[cfg(not(feature = "redis"))]
        Some(_) => return Err("REDIS_URL: this build has no Redis support".into()),
        None => (
            Arc::new(MemoryOtpStore::new()),
            Arc::new(MemoryRateLimitStore::new()),
        ),
    };
    let human_check: Option<Box<dyn refsys_core::HumanCheck>> = match &config.human_check {
        HumanCheckConfig::Off => None,
        HumanCheckConfig::Pow { difficulty } => {
            Some(Box::new(ProofOfWork::new(&keys).difficulty(*difficulty)))
        }
        HumanCheckConfig::Captcha {
            provider,
            site_key,
            secret,
            verify_url,
        } => {
            let mut check = match *provider {
                "turnstile" => SiteVerify::turnstile(site_key, secret),
                _ => SiteVerify::hcaptcha(site_key, secret),
            };
            if let Some(url) = verify_url {
                check = check.verify_url(url);
            }
            Some(Box::new(check))
        }
    };
    let mut builder = ReferralService::builder(users, otps, sms, keys)
        .policy(config.policy.clone())
        .client_limits(rate, config.client_limits.clone())
        .revocation(config.revocation);
    if let Some(check) = human_check {
        builder = builder.human_check(check);
    }
    if config.events.is_some() && role == Role::Admin {
        builder = builder.record_events();
    } else if let Some(events) = &config.events {
        let delivery = EventDelivery {
            handler_timeout: events.timeout,
            lease: events.timeout.saturating_mul(4),
            max_age: events.max_age,
            retention: events.retention,
            ..EventDelivery::default()
        };
        builder = builder.event_handler(events::EventWebhook::new(events)?, delivery);
    }
    Ok(builder.build())
}

/// Connects to the users' database and migrates it (both the server and the admin commands
/// do: the migrations are idempotent).
pub(crate) async fn open_users(
    database: &Database,
) -> Result<Arc<dyn UserStore>, Box<dyn std::error::Error>> {
    let unreachable = |e: StoreError| format!("DATABASE_URL: {e}");
    let migrating = |e: StoreError| format!("DATABASE_URL: migrating: {e}");
    let users: Arc<dyn UserStore> = match database {
        Database::Sqlite(url) => {
            let store = SqliteUserStore::connect(url).await.map_err(unreachable)?;
            store.migrate().await.map_err(migrating)?;
            Arc::new(store)
        }
        #[cfg(feature = "postgres")]
        Database::Postgres(url) => {
            let store = PgUserStore::connect(url).await.map_err(unreachable)?;
            store.migrate().await.map_err(migrating)?;
            Arc::new(store)
        }
        // `Config` refuses a postgres:// DATABASE_URL in a build without the `postgres` feature.
        #[cfg(not(feature = "postgres"))]
        Database::Postgres(_) => {
            return Err("DATABASE_URL: this build has no PostgreSQL support".into());
        }
    };
    Ok(users)
}
