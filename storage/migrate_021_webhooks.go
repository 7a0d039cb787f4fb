package storage

import "gorm.io/gorm"

func init() {
	register(migration{21, "webhook endpoints, subscriptions and the delivery outbox", func(tx *gorm.DB) error {
		return tx.Migrator().CreateTable(&WebhookEndpoint{}, &WebhookSubscription{}, &WebhookDelivery{})
	}})
}
