//! The sqlx edge the shared store code runs on. [`Sql`] is a database whose driver binds the
//! value types the schema uses, whose rows read as [`Columns`] and whose connections run
//! statements; SQLite and PostgreSQL both are. The bounds sqlx needs are stated once here, as
//! supertraits, so code generic over the database only says `DB: Sql`.

use std::{future::Future, pin::Pin};

use sqlx::{Database, Encode, Executor, IntoArguments, Type};

use super::rows::Columns;

/// A boxed future that may move between threads, as sqlx's executors return.
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A statement with the values bound to it so far.
pub(crate) type Query<'q, DB> = sqlx::query::Query<'q, DB, <DB as Database>::Arguments<'q>>;

/// A database whose driver binds values of type `T`.
pub(crate) trait Binds<'q, T>: Database {
    /// `query` with `value` bound to its next placeholder.
    fn bind(query: Query<'q, Self>, value: T) -> Query<'q, Self>;
}

impl<'q, T, DB> Binds<'q, T> for DB
where
    DB: Database,
    T: 'q + Encode<'q, DB> + Type<DB>,
{
    fn bind(query: Query<'q, Self>, value: T) -> Query<'q, Self> {
        query.bind(value)
    }
}

/// A database whose connections run statements.
pub(crate) trait Executes: Database {
    /// Runs `query` on `conn`.
    fn execute<'c, 'q: 'c>(
        conn: &'c mut Self::Connection,
        query: Query<'q, Self>,
    ) -> BoxFuture<'c, Result<Self::QueryResult, sqlx::Error>>;

    /// Runs `query` on `conn`; every row it returns.
    fn fetch_all<'c, 'q: 'c>(
        conn: &'c mut Self::Connection,
        query: Query<'q, Self>,
    ) -> BoxFuture<'c, Result<Vec<Self::Row>, sqlx::Error>>;

    /// Runs `query` on `conn`; its first row, if any.
    fn fetch_optional<'c, 'q: 'c>(
        conn: &'c mut Self::Connection,
        query: Query<'q, Self>,
    ) -> BoxFuture<'c, Result<Option<Self::Row>, sqlx::Error>>;
}

impl<DB: Database> Executes for DB
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
{
    fn execute<'c, 'q: 'c>(
        conn: &'c mut Self::Connection,
        query: Query<'q, Self>,
    ) -> BoxFuture<'c, Result<Self::QueryResult, sqlx::Error>> {
        conn.execute(query)
    }

    fn fetch_all<'c, 'q: 'c>(
        conn: &'c mut Self::Connection,
        query: Query<'q, Self>,
    ) -> BoxFuture<'c, Result<Vec<Self::Row>, sqlx::Error>> {
        conn.fetch_all(query)
    }

    fn fetch_optional<'c, 'q: 'c>(
        conn: &'c mut Self::Connection,
        query: Query<'q, Self>,
    ) -> BoxFuture<'c, Result<Option<Self::Row>, sqlx::Error>> {
        conn.fetch_optional(query)
    }
}

/// What a statement reports having done.
pub(crate) trait Affected {
    /// How many rows it inserted, updated or deleted.
    fn rows(&self) -> u64;
}

impl Affected for sqlx::sqlite::SqliteQueryResult {
    fn rows(&self) -> u64 {
        self.rows_affected()
    }
}

impl Affected for sqlx::postgres::PgQueryResult {
    fn rows(&self) -> u64 {
        self.rows_affected()
    }
}

/// A database the shared store code runs on: its connections run statements, its driver binds
/// the schema's value types (a flag is an `i16`: SQLite stores any integer, PostgreSQL's column
/// is a SMALLINT), and its rows read as [`Columns`].
pub(crate) trait Sql:
    Executes
    + Database<Connection: Run<Self>, Row: Columns, QueryResult: Affected>
    + for<'q> Binds<'q, i16>
    + for<'q> Binds<'q, i64>
    + for<'q> Binds<'q, Option<i64>>
    + for<'q> Binds<'q, &'q str>
    + for<'q> Binds<'q, Option<&'q str>>
    + for<'q> Binds<'q, String>
    + for<'q> Binds<'q, &'q [u8]>
    + for<'q> Binds<'q, Option<&'q [u8]>>
{
}

impl Sql for sqlx::Sqlite {}

impl Sql for sqlx::Postgres {}

/// A connection of database `DB`, on which the shared code builds statements.
pub(crate) trait Run<DB: Database> {
    /// `statement`, to bind values to and run on this connection.
    fn sql<'a>(&'a mut self, statement: &'a str) -> Bound<'a, DB>;
}

impl Run<sqlx::Sqlite> for sqlx::SqliteConnection {
    fn sql<'a>(&'a mut self, statement: &'a str) -> Bound<'a, sqlx::Sqlite> {
        Bound::new(self, statement)
    }
}

impl Run<sqlx::Postgres> for sqlx::PgConnection {
    fn sql<'a>(&'a mut self, statement: &'a str) -> Bound<'a, sqlx::Postgres> {
        Bound::new(self, statement)
    }
}

/// A statement with the values bound to it so far, and the connection it will run on:
/// sqlx's `bind`, `execute` and `fetch_*`, for any [`Sql`] database.
pub(crate) struct Bound<'a, DB: Database> {
    conn: &'a mut DB::Connection,
    query: Query<'a, DB>,
}

impl<'a, DB: Database> Bound<'a, DB> {
    fn new(conn: &'a mut DB::Connection, statement: &'a str) -> Self {
        Self {
            conn,
            query: sqlx::query(statement),
        }
    }
}

impl<'a, DB: Sql> Bound<'a, DB> {
    /// Binds `value` to the next placeholder.
    pub(crate) fn arg<T>(self, value: T) -> Self
    where
        DB: Binds<'a, T>,
    {
        Self {
            conn: self.conn,
            query: <DB as Binds<'a, T>>::bind(self.query, value),
        }
    }

    /// Runs the statement; how many rows it changed.
    pub(crate) async fn run(self) -> Result<u64, sqlx::Error> {
        Ok(DB::execute(self.conn, self.query).await?.rows())
    }

    /// Runs the statement; every row it returns.
    pub(crate) fn rows(self) -> BoxFuture<'a, Result<Vec<DB::Row>, sqlx::Error>> {
        DB::fetch_all(self.conn, self.query)
    }

    /// Runs the statement; its first row, if any.
    pub(crate) fn maybe_row(self) -> BoxFuture<'a, Result<Option<DB::Row>, sqlx::Error>> {
        DB::fetch_optional(self.conn, self.query)
    }

    /// Runs the statement; its first row (`RowNotFound` without one).
    pub(crate) async fn row(self) -> Result<DB::Row, sqlx::Error> {
        self.maybe_row().await?.ok_or(sqlx::Error::RowNotFound)
    }
}
