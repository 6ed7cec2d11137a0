package client_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/techbossai/techboss/client"
)

// Open the web app a sandbox serves: list its ports, then share one.
func ExampleClient_Ports() {
	ctx := context.Background()
	c, err := client.New("https://techboss.example.com", client.WithToken("tbk_..."))
	if err != nil {
		log.Fatal(err)
	}
	ports, err := c.Ports(ctx, "sb_123")
	if err != nil {
		log.Fatal(err)
	}
	for _, p := range ports {
		// The owner's token or session opens PreviewURL.
		fmt.Println(p.Port, c.PreviewURL("sb_123", p.Port))
	}
	// A link anyone can open for a day; RevokePreviewLink ends it early.
	link, err := c.CreatePreviewLink(ctx, "sb_123", 8000, 24*time.Hour)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(link.URL, link.ExpiresAt)
	_ = c.RevokePreviewLink(ctx, "sb_123", 8000, link.LinkID)
}
