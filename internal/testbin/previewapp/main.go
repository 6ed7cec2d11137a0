// Previewapp is the app the preview proxy tests run inside a sandbox:
//
//	previewapp -port 8000
//
// It listens on 127.0.0.1:<port> and serves
//
//	/headers  the request as JSON: method, path, query, host and headers
//	          (so tests see what the sandbox receives, credentials included)
//	/cookie   sets a host cookie and one for a parent Domain
//	/ws       a WebSocket that echoes every message back
//	/         "previewapp <path>"
//
// It is a static program so tests can copy it into a sandbox
// (CGO_ENABLED=0 go build ./internal/testbin/previewapp).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"strconv"

	"github.com/coder/websocket"
)

func main() {
	port := flag.Int("port", 8000, "TCP port on 127.0.0.1")
	flag.Parse()
	mux := http.NewServeMux()
	mux.HandleFunc("/headers", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"method": r.Method, "path": r.URL.Path, "query": r.URL.RawQuery, "host": r.Host, "headers": r.Header,
		})
	})
	mux.HandleFunc("/cookie", func(w http.ResponseWriter, r *http.Request) {
		http.SetCookie(w, &http.Cookie{Name: "app", Value: "1", Path: "/"})
		http.SetCookie(w, &http.Cookie{Name: "wide", Value: "1", Path: "/", Domain: r.URL.Query().Get("domain")})
		http.SetCookie(w, &http.Cookie{Name: "techboss_session", Value: "planted", Path: "/", Domain: r.URL.Query().Get("domain")})
		fmt.Fprintln(w, "cookies set")
	})
	mux.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
		if err != nil {
			return
		}
		defer c.CloseNow()
		c.SetReadLimit(1 << 20)
		ctx := context.Background()
		for {
			typ, b, err := c.Read(ctx)
			if err != nil {
				return
			}
			if err := c.Write(ctx, typ, b); err != nil {
				return
			}
		}
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "previewapp %s", r.URL.Path)
	})
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(*port)))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Fprintln(os.Stdout, "listening")
	log.Fatal(http.Serve(ln, mux))
}
