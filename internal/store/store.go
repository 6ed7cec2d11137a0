// Package store is the database: one DB type over SQLite (the embedded
// default) and PostgreSQL (several replicas), with embedded goose
// migrations. Queries are written once with '?' placeholders and rebound
// for PostgreSQL. Times are stored as UTC unix milliseconds (BIGINT) so the
// same SQL works on both.
package store

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pressly/goose/v3"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"
	_ "modernc.org/sqlite"             // database/sql driver "sqlite"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Dialect names the SQL backend.
type Dialect string

// The dialects.
const (
	SQLite   Dialect = "sqlite"
	Postgres Dialect = "postgres"
)

// DB is the store. It is safe for concurrent use.
type DB struct {
	db      *sql.DB
	dialect Dialect
	url     string // PostgreSQL: for the run feed's own connection

	// SQLite: the background checkpointer (see checkpointer).
	stopCheckpoints context.CancelFunc
	checkpoints     sync.WaitGroup
}

// checkpointEvery is how often the WAL is copied back into the SQLite
// database file.
const checkpointEvery = time.Second

// Open opens the database named by url: a postgres:// or postgresql:// URL
// selects PostgreSQL; anything else is a SQLite file path (created if
// missing, WAL mode). It does not migrate; call Migrate.
func Open(ctx context.Context, url string) (*DB, error) {
	if strings.HasPrefix(url, "postgres://") || strings.HasPrefix(url, "postgresql://") {
		db, err := sql.Open("pgx", url)
		if err != nil {
			return nil, fmt.Errorf("open postgres: %w", err)
		}
		db.SetMaxOpenConns(32)
		db.SetMaxIdleConns(8)
		if err := db.PingContext(ctx); err != nil {
			db.Close()
			return nil, fmt.Errorf("connect postgres: %w", err)
		}
		return &DB{db: db, dialect: Postgres, url: url}, nil
	}
	path := strings.TrimPrefix(url, "sqlite:")
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("create database dir: %w", err)
		}
	}
	// Commits do not sync (WAL, synchronous NORMAL) and do not checkpoint
	// (wal_autocheckpoint 0): see checkpointer.
	dsn := "file:" + path + "?_pragma=journal_mode(WAL)&_pragma=busy_timeout(10000)&_pragma=foreign_keys(1)&_pragma=synchronous(NORMAL)&_pragma=wal_autocheckpoint(0)&_txlock=immediate"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	// One writer at a time is SQLite's model; a small pool keeps readers
	// concurrent under WAL without piling up busy writers.
	db.SetMaxOpenConns(8)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	d := &DB{db: db, dialect: SQLite}
	cctx, cancel := context.WithCancel(context.Background())
	d.stopCheckpoints = cancel
	d.checkpoints.Go(func() { d.checkpointer(cctx) })
	return d, nil
}

// checkpointer copies the WAL back into the database file every
// checkpointEvery until ctx is done. SQLite's own automatic checkpoint
// runs inside whichever commit takes the WAL past 1,000 pages, and that
// commit then waits for the checkpoint's fsync (5–20 ms on this project's
// machines): the run event being persisted, and every live subscriber of
// it, waited too. Here the fsync happens on a connection of its own; a
// PASSIVE checkpoint never blocks writers or readers.
func (d *DB) checkpointer(ctx context.Context) {
	t := time.NewTicker(checkpointEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			// A failure (the database busy or closing) is retried on the
			// next tick; the WAL only grows meanwhile.
			_, _ = d.db.ExecContext(ctx, "PRAGMA wal_checkpoint(PASSIVE)")
		}
	}
}

// Dialect reports which backend this is.
func (d *DB) Dialect() Dialect { return d.dialect }

// Close closes the database (for SQLite after a last checkpoint).
func (d *DB) Close() error {
	if d.stopCheckpoints != nil {
		d.stopCheckpoints()
		d.checkpoints.Wait()
		_, _ = d.db.Exec("PRAGMA wal_checkpoint(TRUNCATE)")
	}
	return d.db.Close()
}

// Ping checks the database is reachable (for /readyz); an unreachable
// database is errs.Unavailable.
func (d *DB) Ping(ctx context.Context) error { return classify(d.db.PingContext(ctx)) }

// SQL returns the underlying *sql.DB (for tests and tools).
func (d *DB) SQL() *sql.DB { return d.db }

// Migrate runs every pending embedded migration.
func (d *DB) Migrate(ctx context.Context) error {
	dialect := goose.DialectSQLite3
	if d.dialect == Postgres {
		dialect = goose.DialectPostgres
	}
	sub, err := fsSub()
	if err != nil {
		return err
	}
	p, err := goose.NewProvider(dialect, d.db, sub)
	if err != nil {
		return fmt.Errorf("migrations: %w", err)
	}
	if _, err := p.Up(ctx); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	return nil
}

// rebind turns '?' placeholders into $1..$n for PostgreSQL. Queries in
// this package never put '?' inside string literals.
func (d *DB) rebind(q string) string {
	if d.dialect != Postgres {
		return q
	}
	var b strings.Builder
	b.Grow(len(q) + 8)
	n := 0
	for i := 0; i < len(q); i++ {
		if q[i] == '?' {
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
			continue
		}
		b.WriteByte(q[i])
	}
	return b.String()
}

// querier is what both *sql.DB and *sql.Tx offer.
type querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func (d *DB) exec(ctx context.Context, q querier, query string, args ...any) (sql.Result, error) {
	res, err := q.ExecContext(ctx, d.rebind(query), args...)
	return res, classify(err)
}

func (d *DB) query(ctx context.Context, q querier, query string, args ...any) (*sql.Rows, error) {
	rows, err := q.QueryContext(ctx, d.rebind(query), args...)
	return rows, classify(err)
}

func (d *DB) queryRow(ctx context.Context, q querier, query string, args ...any) row {
	return row{q.QueryRowContext(ctx, d.rebind(query), args...)}
}

// row is a *sql.Row whose Scan classifies driver errors (see classify).
type row struct{ r *sql.Row }

// Scan is (*sql.Row).Scan with the error classified.
func (r row) Scan(dest ...any) error { return classify(r.r.Scan(dest...)) }

// inTx runs fn in a transaction, committing if it returns nil.
func (d *DB) inTx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	tx, err := d.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", classify(err))
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return classify(txDone(ctx, err))
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", classify(txDone(ctx, err)))
	}
	return nil
}

// txDone names ctx's end as the cause of sql.ErrTxDone: database/sql
// rolls a transaction back when its context ends, and a statement or the
// commit after that answers ErrTxDone, which alone would not say that the
// database ran out of time (Unavailable) rather than refused the write.
func txDone(ctx context.Context, err error) error {
	if errors.Is(err, sql.ErrTxDone) && ctx.Err() != nil {
		return fmt.Errorf("%w (%w)", ctx.Err(), err)
	}
	return err
}

// ms converts a time to stored unix milliseconds (0 for the zero time).
func ms(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

// fromMS converts stored unix milliseconds back to a UTC time.
func fromMS(v int64) time.Time {
	if v == 0 {
		return time.Time{}
	}
	return time.UnixMilli(v).UTC()
}

// isUnique reports whether err is a unique-constraint violation on either backend.
func isUnique(err error) bool {
	if err == nil {
		return false
	}
	s := err.Error()
	return strings.Contains(s, "UNIQUE constraint failed") || strings.Contains(s, "SQLSTATE 23505")
}

var errNoRows = sql.ErrNoRows

func isNoRows(err error) bool { return errors.Is(err, errNoRows) }

// Rebind returns q with '?' placeholders in this dialect's form (for tests and tools using SQL()).
func (d *DB) Rebind(q string) string { return d.rebind(q) }
