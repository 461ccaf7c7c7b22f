//! A caller dropped while its `BEGIN` is answered (a browser that aborted a search, a timeout)
//! must not lend its pooled connection on inside a transaction: `db::begin`.
//!
//! PostgreSQL is reached through a relay on 127.0.0.1 that holds its answers back, as a loaded
//! server would, so the caller is dropped between sending `BEGIN` and reading the answer.

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres, Transaction};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixStream};

use crate::support::TestDb;

/// How long the relay holds each answer of the server.
const HELD: Duration = Duration::from_millis(400);
/// When the caller gives up: long after `BEGIN` is sent, long before its answer arrives.
const GIVE_UP: Duration = Duration::from_millis(100);

#[tokio::test]
async fn a_caller_dropped_during_begin_lends_no_open_transaction_on() {
    let db = TestDb::new().await;
    sqlx::query("CREATE TABLE notes (id int PRIMARY KEY, body text NOT NULL)").execute(&db.pool).await.unwrap();
    sqlx::query("INSERT INTO notes VALUES (1, 'first'), (2, 'first')").execute(&db.pool).await.unwrap();

    // sqlx's own `Pool::begin`: the connection goes back inside the transaction, and the next
    // caller's write is never committed (this is why `db::begin` exists; if it fails, sqlx has
    // fixed its issue 4393 and `db::begin` may call `Pool::begin` directly).
    let (pool, delay) = slow_pool(&db).await;
    #[allow(clippy::disallowed_methods)]
    let dropped = tokio::time::timeout(GIVE_UP, pool.begin()).await;
    assert!(dropped.is_err(), "the caller gave up before BEGIN was answered");
    delay.store(0, Ordering::Relaxed);
    sqlx::query("UPDATE notes SET body = 'second' WHERE id = 1").execute(&pool).await.unwrap();
    assert_eq!(body(&db.pool, 1).await, "first", "sqlx's begin lends the transaction on: the write is not committed");
    assert_eq!(open_transactions(&db.pool).await, 1);
    pool.close().await;
    assert_eq!(body(&db.pool, 1).await, "first", "and it is lost when the connection closes");

    // `db::begin`: the transaction is rolled back, and the next caller's write is committed.
    let (pool, delay) = slow_pool(&db).await;
    let dropped: Result<Result<Transaction<'static, Postgres>, _>, _> =
        tokio::time::timeout(GIVE_UP, skywarden::db::begin(&pool)).await;
    assert!(dropped.is_err(), "the caller gave up before BEGIN was answered");
    delay.store(0, Ordering::Relaxed);
    sqlx::query("UPDATE notes SET body = 'second' WHERE id = 2").execute(&pool).await.unwrap();
    assert_eq!(body(&db.pool, 2).await, "second", "the write is committed at once");
    assert_eq!(open_transactions(&db.pool).await, 0);

    // A transaction begun and used as usual still commits.
    let mut tx = skywarden::db::begin(&pool).await.unwrap();
    sqlx::query("UPDATE notes SET body = 'third' WHERE id = 2").execute(&mut *tx).await.unwrap();
    assert_eq!(body(&db.pool, 2).await, "second", "not before the commit");
    tx.commit().await.unwrap();
    assert_eq!(body(&db.pool, 2).await, "third");
    pool.close().await;
}

async fn body(pool: &PgPool, id: i32) -> String {
    sqlx::query_scalar("SELECT body FROM notes WHERE id = $1").bind(id).fetch_one(pool).await.unwrap()
}

/// Sessions of this database, other than the caller's, inside a transaction they are not running
/// a statement of.
async fn open_transactions(pool: &PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity
         WHERE datname = current_database() AND pid <> pg_backend_pid() AND state LIKE 'idle in transaction%'",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

/// A one-connection pool on the test database through the relay, its connection open, and the
/// relay's delay (milliseconds) set to `HELD`.
async fn slow_pool(db: &TestDb) -> (PgPool, Arc<AtomicU64>) {
    let target = PgConnectOptions::from_str(&db.url).unwrap();
    let delay = Arc::new(AtomicU64::new(0));
    let port = relay(&target, delay.clone()).await;
    let options = PgConnectOptions::new_without_pgpass()
        .host("127.0.0.1")
        .port(port)
        .username(target.get_username())
        .database(target.get_database().unwrap());
    // No ping before each use: the caller's first round trip is its BEGIN.
    let pool = PgPoolOptions::new().max_connections(1).test_before_acquire(false).connect_with(options).await.unwrap();
    sqlx::query("SELECT 1").execute(&pool).await.unwrap();
    // Back in the pool (a round trip of sqlx's own after each use) before the answers are held.
    while pool.num_idle() < 1 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    delay.store(u64::try_from(HELD.as_millis()).unwrap(), Ordering::Relaxed);
    (pool, delay)
}

/// A TCP relay on 127.0.0.1 to the server of `target` (its socket, or its host and port) that
/// holds each answer `delay` milliseconds.
async fn relay(target: &PgConnectOptions, delay: Arc<AtomicU64>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let socket = target.get_socket().map(|dir| dir.join(format!(".s.PGSQL.{}", target.get_port())));
    let address = (target.get_host().to_owned(), target.get_port());
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let (client_read, client_write) = client.into_split();
            let delay = delay.clone();
            match &socket {
                Some(path) => {
                    let (server_read, server_write) = UnixStream::connect(path).await.unwrap().into_split();
                    tokio::spawn(pump(client_read, server_write, None));
                    tokio::spawn(pump(server_read, client_write, Some(delay)));
                }
                None => {
                    let (server_read, server_write) = TcpStream::connect(&address).await.unwrap().into_split();
                    tokio::spawn(pump(client_read, server_write, None));
                    tokio::spawn(pump(server_read, client_write, Some(delay)));
                }
            }
        }
    });
    port
}

async fn pump(mut from: impl AsyncRead + Unpin, mut to: impl AsyncWrite + Unpin, delay: Option<Arc<AtomicU64>>) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let Ok(read) = from.read(&mut buffer).await else { return };
        if read == 0 {
            return;
        }
        if let Some(delay) = &delay {
            tokio::time::sleep(Duration::from_millis(delay.load(Ordering::Relaxed))).await;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}
