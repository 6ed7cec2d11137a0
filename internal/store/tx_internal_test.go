package store

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/techbossai/techboss/internal/errs"
)

// TestTxDeadlineIsUnavailable: a transaction whose context runs out
// before its COMMIT (database/sql rolls it back then, and the commit
// answers sql.ErrTxDone) failed for lack of time, which is Unavailable
// (callers retry it), not a refusal of the write.
func TestTxDeadlineIsUnavailable(t *testing.T) {
	ctx := context.Background()
	d, err := Open(ctx, filepath.Join(t.TempDir(), "tx.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	tctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	err = d.inTx(tctx, func(tx *sql.Tx) error {
		if _, err := d.exec(tctx, tx, `CREATE TABLE t (x INTEGER)`); err != nil {
			return err
		}
		<-tctx.Done()
		// Wait until database/sql has rolled the transaction back.
		for {
			if _, err := tx.ExecContext(ctx, `SELECT 1`); errors.Is(err, sql.ErrTxDone) {
				return nil
			}
			time.Sleep(time.Millisecond)
		}
	})
	if !errors.Is(err, sql.ErrTxDone) || errs.KindOf(err) != errs.Unavailable {
		t.Fatalf("commit after the deadline: %v (kind %v), want an Unavailable ErrTxDone", err, errs.KindOf(err))
	}
}
