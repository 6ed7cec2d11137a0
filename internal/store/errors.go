package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"

	"github.com/jackc/pgx/v5/pgconn"
	"modernc.org/sqlite"

	"github.com/techbossai/techboss/internal/errs"
)

// RetryAfter is the Retry-After (seconds) an unavailable database asks
// clients to wait: about as long as a PostgreSQL restart or failover takes.
const RetryAfter = 5

// SQLite primary result codes (the low byte of an extended code).
const (
	sqliteBusy   = 5
	sqliteLocked = 6
	sqliteIOErr  = 10
	sqliteFull   = 13
)

// classify turns a driver error that means "the database cannot answer
// now" into errs.Unavailable (503 + Retry-After), and a full disk under
// SQLite into errs.InsufficientStorage (507): the one place in the store
// where driver errors get a kind. Errors that already carry a kind, and
// every other error, are returned unchanged. The public message names the
// database, never its URL or path; the cause stays for the logs.
func classify(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := errs.Public(err); ok {
		return err
	}
	switch {
	case isFull(err):
		return errs.Wrap(errs.InsufficientStorage, err, fullMessage(err))
	case isUnavailable(err):
		e := errs.Wrap(errs.Unavailable, err, "the database is unreachable; retry shortly")
		e.RetryAfter = RetryAfter
		return e
	}
	return err
}

// isUnavailable reports whether err means the database is down, restarting,
// unreachable or too busy to answer in time, rather than that the
// statement was wrong. A request cancelled by its own client is not.
func isUnavailable(err error) bool {
	if errors.Is(err, context.Canceled) {
		return false
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case strings.HasPrefix(pgErr.Code, "08"): // connection exception
			return true
		case pgErr.Code == "57P01", pgErr.Code == "57P02", pgErr.Code == "57P03": // admin/crash shutdown, cannot connect now
			return true
		case pgErr.Code == "53300": // too many connections
			return true
		}
		return false
	}
	var sqlErr *sqlite.Error
	if errors.As(err, &sqlErr) {
		// busy/locked are returned only after busy_timeout has run out.
		switch sqlErr.Code() & 0xff {
		case sqliteBusy, sqliteLocked, sqliteIOErr:
			return true
		}
		return false
	}
	var connErr *pgconn.ConnectError
	var netErr net.Error
	switch {
	case errors.As(err, &connErr), errors.As(err, &netErr):
		return true
	case errors.Is(err, driver.ErrBadConn), errors.Is(err, sql.ErrConnDone), errors.Is(err, pgconn.ErrConnClosed):
		// ErrConnClosed ("conn closed"): pgx closed a connection the
		// server had cut (an immediate shutdown's notice, then EOF) before
		// or while this statement used it; for a COMMIT its outcome is
		// unknown, which a retry of an idempotent write settles.
		return true
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return true
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		// The server closed the connection mid-conversation.
		return true
	case errors.Is(err, context.DeadlineExceeded), pgconn.Timeout(err):
		// Waiting for a pooled connection or an answer ran out of time.
		return true
	}
	return false
}

// fullMessage names what is full: the data dir for SQLite (the database
// file lives there), the PostgreSQL server's disk otherwise.
func fullMessage(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return "the database server's disk is full; free space on it"
	}
	return "the data dir is full (the database cannot write); free space on the server's data volume"
}

// isFull reports a full disk under the database.
func isFull(err error) bool {
	var sqlErr *sqlite.Error
	if errors.As(err, &sqlErr) && sqlErr.Code()&0xff == sqliteFull {
		return true
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "53100" { // disk_full
		return true
	}
	return errs.NoSpace(err)
}
