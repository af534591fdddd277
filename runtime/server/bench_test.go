package server_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/tandem-dev/tandem/runtime/ot"
)

// BenchmarkSubmitAck measures one operation's round trip over a loopback
// WebSocket: submit, transform, append, flush queue, ack.
func BenchmarkSubmitAck(b *testing.B) {
	for _, clients := range []int{1, 8} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			st := newStackB(b)
			ctx := context.Background()
			cs := make([]*clientT, clients)
			for i := range cs {
				cs[i] = st.connect(ctx, "bench", fmt.Sprintf("b%d", i))
			}
			b.ResetTimer()
			var wg sync.WaitGroup
			per := b.N/clients + 1
			for _, c := range cs {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for range per {
						if err := c.EditFunc(func(text string) ot.Op { return ot.Op{{Insert: "x"}} }); err != nil {
							b.Error(err)
							return
						}
						if err := c.WaitSynced(ctx, -1); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			b.ReportMetric(float64(per*clients)/b.Elapsed().Seconds(), "ops/s")
		})
	}
}
