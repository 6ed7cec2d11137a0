package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/techbossai/techboss/client"
)

func claudeCmd(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "claude")
	o := addAPIFlags(fs)
	var req client.ClaudeRequest
	fs.StringVar(&req.Model, "model", "", "the model")
	fs.IntVar(&req.MaxTurns, "max-turns", 0, "stop after this many turns")
	fs.StringVar(&req.PermissionMode, "permission-mode", "", "default, acceptEdits, bypassPermissions, plan, dontAsk or ask")
	fs.BoolVar(&req.NewSession, "new-session", false, "start a new session (default: continue the sandbox's last one)")
	fs.StringVar(&req.SessionID, "session", "", "resume this session")
	fs.StringVar(&req.Cwd, "cwd", "", "the directory to run in (in /workspace)")
	pos, err := parseArgs(fs, args, 2, 2, `SANDBOX "PROMPT"`)
	if err != nil {
		return err
	}
	req.Prompt = pos[1]
	c, err := connect(e, o)
	if err != nil {
		return err
	}
	st, err := c.Claude(ctx, pos[0], req)
	if err != nil {
		return err
	}
	defer st.Close()
	fmt.Fprintf(e.stderr, "run %s\n", st.RunID)
	err = printRun(e, o, st)
	if ctx.Err() != nil { // Ctrl-C: cancel the run, not just this stream
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if _, cerr := c.Cancel(cctx, st.RunID); cerr != nil {
			var ae *client.Error
			if !errors.As(cerr, &ae) || ae.StatusCode != 409 {
				return fmt.Errorf("cancel run %s: %w", st.RunID, cerr)
			}
		}
		fmt.Fprintf(e.stderr, "\ncancelled run %s\n", st.RunID)
		return exitCode(130)
	}
	return err
}

// printRun prints a run's stream to its end: the model's text as it
// arrives (tool calls on stderr), or with --json every event as a JSON
// line. A run that did not succeed is an error.
func printRun(e *env, o *apiOpts, st *client.RunStream) error {
	enc := json.NewEncoder(e.stdout)
	var atLineStart = true
	// offsets of the text blocks being streamed, by message and index
	streamed := map[string]int{}
	write := func(s string) {
		if s == "" {
			return
		}
		io.WriteString(e.stdout, s)
		atLineStart = strings.HasSuffix(s, "\n")
	}
	for {
		ev, err := st.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if o.json {
			if err := enc.Encode(ev); err != nil {
				return err
			}
		} else {
			switch ev.Type {
			case "text_delta":
				var d struct {
					MessageID string `json:"message_id"`
					Index     int    `json:"index"`
					Offset    int    `json:"offset"`
					Text      string `json:"text"`
				}
				_ = json.Unmarshal(ev.Data, &d)
				k := d.MessageID + "/" + strconv.Itoa(d.Index)
				if have := streamed[k]; d.Offset <= have && d.Offset+len(d.Text) > have {
					write(d.Text[have-d.Offset:])
					streamed[k] = d.Offset + len(d.Text)
				}
			case "text":
				var d struct {
					Text     string `json:"text"`
					Streamed bool   `json:"streamed"`
				}
				_ = json.Unmarshal(ev.Data, &d)
				if !d.Streamed {
					write(d.Text)
				}
				if !atLineStart {
					write("\n")
				}
			case "tool_use":
				var d struct {
					Name  string          `json:"name"`
					Input json.RawMessage `json:"input"`
				}
				_ = json.Unmarshal(ev.Data, &d)
				in := string(d.Input)
				if len(in) > 200 {
					in = in[:200] + "…"
				}
				fmt.Fprintf(e.stderr, "[tool] %s %s\n", d.Name, in)
			case "permission_request":
				var d client.PermissionRequest
				_ = json.Unmarshal(ev.Data, &d)
				fmt.Fprintf(e.stderr, "[approval needed] %s %s (request %s)\n", d.ToolName, d.Summary, d.RequestID)
			case "error":
				var d struct {
					Message string `json:"message"`
				}
				_ = json.Unmarshal(ev.Data, &d)
				fmt.Fprintf(e.stderr, "[error] %s\n", d.Message)
			}
		}
		if ev.Type == "done" {
			var d client.DoneData
			_ = json.Unmarshal(ev.Data, &d)
			if !o.json && !atLineStart {
				write("\n")
			}
			if d.Status != "succeeded" {
				if d.Error != "" {
					return fmt.Errorf("run %s %s: %s", st.RunID, d.Status, d.Error)
				}
				return fmt.Errorf("run %s %s", st.RunID, d.Status)
			}
		}
	}
}

func runsList(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "runs ls")
	o := addAPIFlags(fs)
	pos, err := parseArgs(fs, args, 1, 1, "SANDBOX")
	if err != nil {
		return err
	}
	c, err := connect(e, o)
	if err != nil {
		return err
	}
	runs, err := c.Runs(ctx, pos[0])
	if err != nil {
		return err
	}
	if o.json {
		if runs == nil {
			runs = []client.Run{}
		}
		return writeJSON(e.stdout, runs)
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATUS\tCREATED\tCOST\tPROMPT")
	for _, r := range runs {
		p := strings.Join(strings.Fields(r.Prompt), " ")
		if len(p) > 50 {
			p = p[:50] + "…"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t$%.4f\t%s\n", r.ID, r.Status, r.CreatedAt.Local().Format(time.DateTime), r.CostUSD, p)
	}
	return tw.Flush()
}

func runsLogs(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "runs logs")
	o := addAPIFlags(fs)
	after := fs.Int64("after", 0, "start after this event number")
	pos, err := parseArgs(fs, args, 1, 1, "RUN (follows a running run to its end)")
	if err != nil {
		return err
	}
	c, err := connect(e, o)
	if err != nil {
		return err
	}
	st, err := c.RunEvents(ctx, pos[0], client.StreamOptions{After: *after})
	if err != nil {
		return err
	}
	defer st.Close()
	return printRun(e, o, st)
}

func snapshotList(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "snapshot ls")
	o := addAPIFlags(fs)
	limit := fs.Int("limit", 0, "at most this many")
	pos, err := parseArgs(fs, args, 1, 1, "SANDBOX")
	if err != nil {
		return err
	}
	c, err := connect(e, o)
	if err != nil {
		return err
	}
	snaps, err := c.ListSnapshots(ctx, pos[0], *limit)
	if err != nil {
		return err
	}
	if o.json {
		if snaps == nil {
			snaps = []client.Snapshot{}
		}
		return writeJSON(e.stdout, snaps)
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tTRIGGER\tFILES\tBYTES\tCREATED")
	for _, s := range snaps {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\n", s.ID, s.Trigger, s.FileCount, s.Bytes, s.CreatedAt.Local().Format(time.DateTime))
	}
	return tw.Flush()
}

func snapshotCreate(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "snapshot create")
	o := addAPIFlags(fs)
	pos, err := parseArgs(fs, args, 1, 1, "SANDBOX")
	if err != nil {
		return err
	}
	c, err := connect(e, o)
	if err != nil {
		return err
	}
	s, err := c.CreateSnapshot(ctx, pos[0])
	if err != nil {
		return err
	}
	if o.json {
		return writeJSON(e.stdout, s)
	}
	fmt.Fprintln(e.stdout, s.ID)
	return nil
}

func snapshotRestore(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "snapshot restore")
	o := addAPIFlags(fs)
	pos, err := parseArgs(fs, args, 2, 2, "SANDBOX SNAPSHOT")
	if err != nil {
		return err
	}
	c, err := connect(e, o)
	if err != nil {
		return err
	}
	r, err := c.RestoreSnapshot(ctx, pos[0], pos[1])
	if err != nil {
		return err
	}
	if o.json {
		return writeJSON(e.stdout, r)
	}
	fmt.Fprintf(e.stdout, "restored %s into %s: %d files, %d removed\n", r.SnapshotID, r.SandboxID, r.Restored.Files, r.Restored.Removed)
	return nil
}

func snapshotDiff(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "snapshot diff")
	o := addAPIFlags(fs)
	pos, err := parseArgs(fs, args, 2, 2, "FROM_SNAPSHOT TO_SNAPSHOT")
	if err != nil {
		return err
	}
	c, err := connect(e, o)
	if err != nil {
		return err
	}
	d, err := c.DiffSnapshots(ctx, pos[0], pos[1])
	if err != nil {
		return err
	}
	if o.json {
		return writeJSON(e.stdout, d)
	}
	for _, p := range d.Added {
		fmt.Fprintf(e.stdout, "+ %s\n", p)
	}
	for _, p := range d.Removed {
		fmt.Fprintf(e.stdout, "- %s\n", p)
	}
	for _, p := range d.Changed {
		fmt.Fprintf(e.stdout, "~ %s\n", p)
	}
	return nil
}

func portsCmd(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "ports")
	o := addAPIFlags(fs)
	pos, err := parseArgs(fs, args, 1, 1, "SANDBOX")
	if err != nil {
		return err
	}
	c, err := connect(e, o)
	if err != nil {
		return err
	}
	ports, err := c.Ports(ctx, pos[0])
	if err != nil {
		return err
	}
	for i := range ports {
		ports[i].PreviewURL = c.PreviewURL(pos[0], ports[i].Port)
	}
	if o.json {
		if ports == nil {
			ports = []client.Port{}
		}
		return writeJSON(e.stdout, ports)
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PORT\tADDRESS\tPROCESS\tPREVIEW")
	for _, p := range ports {
		u := p.PreviewURL
		if p.HostURL != "" {
			u = p.HostURL
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\n", p.Port, p.Address, p.Process, u)
	}
	return tw.Flush()
}

func openCmd(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "open")
	o := addAPIFlags(fs)
	browser := fs.Bool("browser", false, "open the URL in a browser too")
	pos, err := parseArgs(fs, args, 0, 2, "[SANDBOX [PORT]]")
	if err != nil {
		return err
	}
	cfg, _, err := loadConfig(e)
	if err != nil {
		return err
	}
	base := strings.TrimRight(serverURL(e, o, cfg), "/")
	u := base + "/static/modal-sandbox-ui.html"
	switch len(pos) {
	case 1:
		u += "#/sandbox/" + url.PathEscape(pos[0])
	case 2:
		port, err := strconv.Atoi(pos[1])
		if err != nil || port < 1 || port > 65535 {
			return fmt.Errorf("open: PORT must be 1-65535, got %q", pos[1])
		}
		u = base + "/sandbox/" + url.PathEscape(pos[0]) + "/ports/" + strconv.Itoa(port) + "/"
	}
	if o.json {
		if err := writeJSON(e.stdout, map[string]string{"url": u}); err != nil {
			return err
		}
	} else {
		fmt.Fprintln(e.stdout, u)
	}
	if *browser {
		return openBrowser(u)
	}
	return nil
}

func openBrowser(u string) error {
	var cmd *exec.Cmd
	switch runtime.GOOS {
	case "darwin":
		cmd = exec.Command("open", u)
	case "windows":
		cmd = exec.Command("rundll32", "url.dll,FileProtocolHandler", u)
	default:
		cmd = exec.Command("xdg-open", u)
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("open a browser: %w", err)
	}
	go func() { _ = cmd.Wait() }()
	return nil
}
