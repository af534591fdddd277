package redisstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/sony/gobreaker/v2"

	"github.com/tandem-dev/tandem/runtime/store"
)

// BreakerOptions tune the circuit breaker in front of every Redis call.
type BreakerOptions struct {
	// Failures is how many consecutive failed calls open the breaker.
	Failures uint32
	// OpenFor is how long the breaker stays open before letting a probe
	// call through.
	OpenFor time.Duration
}

func newBreaker(o BreakerOptions, onChange func(gobreaker.State)) *gobreaker.CircuitBreaker[any] {
	if o.Failures == 0 {
		o.Failures = 5
	}
	if o.OpenFor <= 0 {
		o.OpenFor = 2 * time.Second
	}
	return gobreaker.NewCircuitBreaker[any](gobreaker.Settings{
		Name:        "redis",
		MaxRequests: 1,
		Timeout:     o.OpenFor,
		ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= o.Failures },
		OnStateChange: func(_ string, _, to gobreaker.State) {
			if onChange != nil {
				onChange(to)
			}
		},
		// A reply from the server, even an error reply or a missing key,
		// proves Redis is up; only transport failures count.
		IsSuccessful: func(err error) bool { return err == nil || isServerReply(err) },
		// The caller giving up says nothing about Redis.
		IsExcluded: func(err error) bool { return errors.Is(err, context.Canceled) },
	})
}

func isServerReply(err error) bool {
	if errors.Is(err, redis.Nil) {
		return true
	}
	var rerr redis.Error
	return errors.As(err, &rerr)
}

// call runs f through the breaker. Transport failures and an open breaker
// come back wrapped in store.ErrUnavailable so callers answer "unavailable,
// retry" instead of waiting.
func call[T any](cb *gobreaker.CircuitBreaker[any], what string, f func() (T, error)) (T, error) {
	v, err := cb.Execute(func() (any, error) { return f() })
	t, _ := v.(T)
	switch {
	case err == nil:
		return t, nil
	case errors.Is(err, gobreaker.ErrOpenState), errors.Is(err, gobreaker.ErrTooManyRequests):
		return t, fmt.Errorf("%s: %w: redis circuit breaker open", what, store.ErrUnavailable)
	case isServerReply(err), errors.Is(err, context.Canceled):
		return t, fmt.Errorf("%s: %w", what, err)
	default:
		return t, fmt.Errorf("%s: %w: %w", what, store.ErrUnavailable, err)
	}
}

func breakerStateValue(s gobreaker.State) float64 {
	switch s {
	case gobreaker.StateHalfOpen:
		return 1
	case gobreaker.StateOpen:
		return 2
	default:
		return 0
	}
}
