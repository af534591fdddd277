package pgstore

import (
	"context"
	"fmt"
	"time"

	"github.com/tandem-dev/tandem/runtime/store"
)

// CompactStep implements storetest.CompactStepper.
func (s *Store) CompactStep(ctx context.Context, doc string, ret store.Retention, now time.Time, perTx int64) (bool, error) {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return false, fmt.Errorf("acquire: %w", err)
	}
	defer conn.Release()
	old := s.compactOps
	s.compactOps = perTx
	defer func() { s.compactOps = old }()
	_, _, more, err := s.compactStep(ctx, conn.Conn(), doc, ret, now)
	return more, err
}
