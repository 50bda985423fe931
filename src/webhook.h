/*-------------------------------------------------------------------------
 *
 * webhook.h
 *	  What the parts of the receiving side share: the call's context, the
 *	  account list, notes and the JSON helpers for payloads from outside.
 *
 *	  webhook.c			signature, envelope, storage (wa_receive,
 *						wa_verify_webhook)
 *	  webhook_status.c	statuses, held statuses (_after_record)
 *	  webhook_inbound.c inbound messages and consent
 *	  webhook_account.c account and template events
 *	  keywords.c		keyword folding
 *	  recipient.c		the checks that sending makes (not a webhook part)
 *
 *-------------------------------------------------------------------------
 */
#ifndef WHATSAPP_WEBHOOK_H
#define WHATSAPP_WEBHOOK_H

#include "executor/spi.h"
#include "nodes/pg_list.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"

/* Strings stored in indexed columns are at most this long. */
#define WA_MAX_ID_LEN		256

/* One account, as the receiving side knows it (ciphertexts only). */
typedef struct HookAccount
{
	int32		id;
	char	   *name;
	char	   *phone_number_id;
	char	   *waba_id;		/* NULL when not set */
	char	   *display;		/* display_phone_number as learned, or NULL */
	bool		dropped;
	bytea	   *sealed;			/* app secret ciphertext, NULL when none */
	char	   *key_id;
} HookAccount;

/* What one call of wa_receive (or _after_record) works with. */
typedef struct HookCtx
{
	HookAccount *accounts;
	int			naccounts;
	int32		verified_by;	/* account whose secret verified, or 0 */
	bool	   *signer;			/* per account: shares the verifying secret */
	int			applied;
	List	   *notes;			/* char *, in the call's context */
	int			nnotes;
	TimestampTz now;
	MemoryContext item_cxt;		/* reset after each item */
	text	   *payload;		/* as received */
	bytea	   *digest;			/* its SHA-256, for redeliveries */
	int			nulls_replaced; /* \u0000 escapes replaced by U+FFFD */
	TimestampTz entry_time;		/* the current entry's "time", or now */
	int64		duplicate_of;	/* an earlier payload of the same bytes */
	bool		single_status;	/* the payload is one status and nothing else */
	bool		stored;			/* the status statement stored the payload */
	bool		stats;			/* count in whatsapp.stats (0.3 objects present) */
} HookCtx;

/* Shared by the parts (webhook.c) */
extern int	wh_spi_run(SPIPlanPtr plan, Datum *values, const char *nulls,
					   bool read_only, long count);
extern char *wh_jstrict(JsonbContainer *c, const char *key);
extern Jsonb *wh_jsub(JsonbContainer *c, const char *key);
extern JsonbContainer *wh_jelem_object(JsonbContainer *arr, uint32 i);
extern bool wh_jtimestamp(JsonbContainer *c, const char *key, TimestampTz *out);
extern bool wh_usable_id(const char *s);
extern bool wh_all_digits(const char *s);
extern void wh_note(HookCtx *ctx, const char *fmt,...) pg_attribute_printf(2, 3);
extern void wh_log_event(int64 message_id, const char *event, bool has_code,
						 int32 code, const char *message);
extern void wh_begin(HookCtx *ctx);
extern void wh_load_accounts(HookCtx *ctx);
extern bool wh_signed_for(HookCtx *ctx, int i);
extern HookAccount *wh_active_account(HookCtx *ctx, const char *phone_number_id);
extern Datum wh_account_ids_for(HookCtx *ctx, const char *phone_number_id, int *n);

/* Statuses (webhook_status.c) */
extern void wh_apply_statuses(HookCtx *ctx, JsonbContainer *value, const char *pnid,
							  const char *where);

/* Inbound messages and consent (webhook_inbound.c) */
extern void wh_apply_messages(HookCtx *ctx, JsonbContainer *value, const char *pnid,
							  const char *where);
extern void wh_apply_user_preferences(HookCtx *ctx, JsonbContainer *value,
									  const char *pnid, const char *where);

/* Account and template events (webhook_account.c) */
extern void wh_apply_template_update(HookCtx *ctx, JsonbContainer *value,
									 const char *waba, const char *field,
									 const char *column, const char *where);
extern void wh_apply_account_update(HookCtx *ctx, JsonbContainer *value,
									const char *waba, const char *field,
									const char *where);
extern void wh_apply_quality_update(HookCtx *ctx, JsonbContainer *value,
									const char *waba, const char *field,
									const char *where);
extern void wh_learn_display(HookCtx *ctx, JsonbContainer *value, const char *pnid);

#endif							/* WHATSAPP_WEBHOOK_H */
