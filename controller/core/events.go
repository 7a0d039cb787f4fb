package core

import (
	"context"
	"encoding/json"

	"github.com/convoice/convoice/storage"
)

// AppendEvent stores an event with its JSON payload in tx.
func AppendEvent(ctx context.Context, tx *storage.Store, convID, typ string, payload any) error {
	b, err := json.Marshal(payload)
	if err != nil {
		return err
	}
	_, err = tx.AppendEvent(ctx, convID, typ, string(b))
	return err
}
