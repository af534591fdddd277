package sqlite

import (
	"context"
	"time"

	"github.com/tandem-dev/tandem/runtime/store"
)

// CompactStep implements storetest.CompactStepper.
func (s *Store) CompactStep(ctx context.Context, doc string, ret store.Retention, now time.Time, perTx int64) (bool, error) {
	old := s.compactOps
	s.compactOps = perTx
	defer func() { s.compactOps = old }()
	_, _, more, err := s.compactStep(ctx, doc, ret, now)
	return more, err
}
