//! A caller dropped while its `BEGIN` is answered (a browser that aborted a search, a timeout)
//! must not lend its pooled connection on inside a transaction: `db::begin`.
//!
//! PostgreSQL is reached through a relay on 127.0.0.1 that holds its answers back, as a loaded
//! server would, and the caller is dropped once its `BEGIN` has reached the server, before the
//! answer can come back.

use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio::sync::{Notify, watch};

use skywarden::db::partitions::PartitionCache;
use skywarden::ingest::store::BatchWriter;

use crate::archive::store_events;
use crate::support::TestDb;

#[tokio::test]
async fn a_caller_dropped_during_begin_lends_no_open_transaction_on() {
    let db = TestDb::new().await;
    sqlx::query("CREATE TABLE notes (id int PRIMARY KEY, body text NOT NULL)").execute(&db.pool).await.unwrap();
    sqlx::query("INSERT INTO notes VALUES (1, 'first'), (2, 'first')").execute(&db.pool).await.unwrap();

    // sqlx's own `Pool::begin`: the connection goes back inside the transaction, and the next
    // caller's write is never committed (this is why `db::begin` exists; if it fails, sqlx has
    // fixed its issue 4393 and `db::begin` may call `Pool::begin` directly).
    let (pool, relay) = relayed_pool(&db).await;
    #[allow(clippy::disallowed_methods)]
    drop(drop_during_begin(&relay, pool.begin()).await);
    sqlx::query("UPDATE notes SET body = 'second' WHERE id = 1").execute(&pool).await.unwrap();
    assert_eq!(body(&db.pool, 1).await, "first", "sqlx's begin lends the transaction on: the write is not committed");
    assert_eq!(open_transactions(&db.pool).await, 1);
    // Its session ended from the server's side (a closed client's session may linger behind the
    // relay): the write is lost with it.
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = current_database() AND pid <> pg_backend_pid() AND state LIKE 'idle in transaction%'",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    wait_for_no_open_transaction(&db.pool).await;
    assert_eq!(body(&db.pool, 1).await, "first", "the write was lost with the connection");
    drop(pool);

    // `db::begin`: the transaction is rolled back, and the next caller's write is committed.
    let (pool, relay) = relayed_pool(&db).await;
    drop(drop_during_begin(&relay, skywarden::db::begin(&pool)).await);
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

#[tokio::test]
async fn a_batch_writer_dropped_during_its_begin_closes_its_connection() {
    let db = TestDb::new().await;
    let (pool, relay) = relayed_pool(&db).await;
    let mut writer = BatchWriter::connect(&pool, Arc::new(PartitionCache::default())).await.unwrap();
    let release = drop_during_begin(&relay, store_events(&mut writer, &[("evt-a", "2024-01-10T10:00:00Z")])).await;
    // The import's task ends with the writer: its connection is closed, not lent on.
    drop(writer);
    drop(release);
    sqlx::query("CREATE TABLE after_the_writer (id int)").execute(&pool).await.unwrap();
    let visible: bool =
        sqlx::query_scalar("SELECT to_regclass('after_the_writer') IS NOT NULL").fetch_one(&db.pool).await.unwrap();
    assert!(visible, "the next statement on the pool is committed, in no transaction left open");
    wait_for_no_open_transaction(&db.pool).await;
    assert_eq!(db.count("SELECT count(*) FROM cloudtrail_events").await, 0, "the dropped batch wrote nothing");
    pool.close().await;
}

/// Polls `work` until the relay has passed its next simple query (a `BEGIN`) to the server,
/// holding the answers from then on, then drops it (as axum drops the handler of a request whose
/// client went away); the answers flow again when the returned guard is dropped.
async fn drop_during_begin<F: Future>(relay: &Relay, work: F) -> Release {
    relay.watching.store(true, Ordering::SeqCst);
    tokio::select! {
        biased;
        () = relay.query_sent.notified() => {}
        _ = work => panic!("the work ended while the relay held every answer"),
    }
    Release(relay.held.clone())
}

/// Lets the relay's answers through again when dropped.
struct Release(Arc<watch::Sender<bool>>);

impl Drop for Release {
    fn drop(&mut self) {
        self.0.send_replace(false);
    }
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

/// A closed connection's server process ends a moment after the client has gone.
async fn wait_for_no_open_transaction(pool: &PgPool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while open_transactions(pool).await > 0 {
        assert!(Instant::now() < deadline, "the closed connection's transaction is still open");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A relay on 127.0.0.1 to the test server: once `watching` is set, the client's next simple
/// query (a `BEGIN`) sets `held` before it is passed on, and `query_sent` is notified after;
/// while `held` is true the server's answers wait.
struct Relay {
    held: Arc<watch::Sender<bool>>,
    watching: Arc<AtomicBool>,
    query_sent: Arc<Notify>,
}

/// A one-connection pool on the test database through a relay, its connection open.
async fn relayed_pool(db: &TestDb) -> (PgPool, Relay) {
    let target = PgConnectOptions::from_str(&db.url).unwrap();
    let relay = Relay {
        held: Arc::new(watch::Sender::new(false)),
        watching: Arc::new(AtomicBool::new(false)),
        query_sent: Arc::new(Notify::new()),
    };
    let port = listen(&target, &relay).await;
    let options = PgConnectOptions::new_without_pgpass()
        .host("127.0.0.1")
        .port(port)
        .username(target.get_username())
        .database(target.get_database().unwrap());
    // No ping before each use: the caller's first message is its BEGIN.
    let pool = PgPoolOptions::new().max_connections(1).test_before_acquire(false).connect_with(options).await.unwrap();
    sqlx::query("SELECT 1").execute(&pool).await.unwrap();
    // Back in the pool (a round trip of sqlx's own after each use).
    while pool.num_idle() < 1 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    (pool, relay)
}

/// Relays each connection to the server of `target` (its socket, or its host and port).
async fn listen(target: &PgConnectOptions, relay: &Relay) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let socket = target.get_socket().map(|dir| dir.join(format!(".s.PGSQL.{}", target.get_port())));
    let address = (target.get_host().to_owned(), target.get_port());
    let (hold, held, watching, query_sent) =
        (relay.held.clone(), relay.held.subscribe(), relay.watching.clone(), relay.query_sent.clone());
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let (client_read, client_write) = client.into_split();
            let up = Upstream { hold: hold.clone(), watching: watching.clone(), query_sent: query_sent.clone() };
            match &socket {
                Some(path) => {
                    let (server_read, server_write) = UnixStream::connect(path).await.unwrap().into_split();
                    tokio::spawn(pump_up(client_read, server_write, up));
                    tokio::spawn(pump_down(server_read, client_write, held.clone()));
                }
                None => {
                    let (server_read, server_write) = TcpStream::connect(&address).await.unwrap().into_split();
                    tokio::spawn(pump_up(client_read, server_write, up));
                    tokio::spawn(pump_down(server_read, client_write, held.clone()));
                }
            }
        }
    });
    port
}

struct Upstream {
    hold: Arc<watch::Sender<bool>>,
    watching: Arc<AtomicBool>,
    query_sent: Arc<Notify>,
}

/// Client to server: a simple query (`Q`) while watched holds the answers from then on, and is
/// said to be sent once passed on.
async fn pump_up(mut from: impl AsyncRead + Unpin, mut to: impl AsyncWrite + Unpin, up: Upstream) {
    let mut buffer = vec![0u8; 64 * 1024];
    while let Ok(read) = from.read(&mut buffer).await {
        let watched = read > 0 && buffer[0] == b'Q' && up.watching.swap(false, Ordering::SeqCst);
        if watched {
            up.hold.send_replace(true);
        }
        if read == 0 || to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
        if watched {
            up.query_sent.notify_one();
        }
    }
}

/// Server to client, each answer held while `held` is true.
async fn pump_down(mut from: impl AsyncRead + Unpin, mut to: impl AsyncWrite + Unpin, mut held: watch::Receiver<bool>) {
    let mut buffer = vec![0u8; 64 * 1024];
    while let Ok(read) = from.read(&mut buffer).await {
        if read == 0 || held.wait_for(|held| !held).await.is_err() || to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}
