package client_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/techbossai/techboss/client"
)

// TestPresence: a watch stream makes its user a viewer of the sandbox
// until it ends.
func TestPresence(t *testing.T) {
	c, id := newSandboxClient(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		var once sync.Once
		_ = c.Watch(ctx, id, "/workspace", false, func(ev client.WatchEvent) error {
			once.Do(func() { close(ready) })
			return nil
		})
	})
	<-ready
	want := func(n int) []client.Viewer {
		t.Helper()
		deadline := time.Now().Add(time.Minute)
		for {
			vs, err := c.Presence(context.Background(), id)
			if err != nil {
				t.Fatal(err)
			}
			if len(vs) == n || time.Now().After(deadline) {
				return vs
			}
			time.Sleep(10 * time.Millisecond) // the stream's handler leaves after its client
		}
	}
	if vs := want(1); len(vs) != 1 || vs[0].Email != "dev@example.com" || len(vs[0].Kinds) != 1 || vs[0].Kinds[0] != "watch" || vs[0].Streams != 1 {
		t.Fatalf("while watching: %+v, want dev@example.com with one watch stream", vs)
	}
	cancel()
	wg.Wait()
	if vs := want(0); len(vs) != 0 {
		t.Fatalf("after the watch ended: %+v, want nobody", vs)
	}
}
