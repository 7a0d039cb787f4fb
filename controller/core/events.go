package core

import (
	"context"
	"encoding/json"

	"github.com/convoice/convoice/storage"
)

// AppendEvent stores an event with its JSON payload in tx (recorded: on
// PostgreSQL written with the transaction's last statement).
func AppendEvent(ctx context.Context, tx *storage.Store, convID, typ string, payload any) error {
	b, err := json.Marshal(payload)
	if err != nil {
		return err
	}
	return tx.RecordEvent(ctx, convID, typ, string(b))
}
