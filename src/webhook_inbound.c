/*-------------------------------------------------------------------------
 *
 * webhook_inbound.c
 *	  Inbound messages and consent: whatsapp.inbound_message, once per
 *	  wamid; edits, revokes and reactions; keywords, buttons and Meta's
 *	  user_preferences as consent events, applied in the order of their own
 *	  times (whatsapp._consent_apply); identities seen together.
 *
 *	  A contact (contacts[]) is matched to a message or preference by wa_id
 *	  or user id, never by position.  A consent event from a wa_id that
 *	  cannot be made E.164 is recorded under the raw "+digits".
 *
 *-------------------------------------------------------------------------
 */
#include "whatsapp.h"
#include "spi_plans.h"
#include "jsonb_access.h"
#include "webhook.h"

#include "catalog/pg_type.h"
#include "utils/array.h"
#include "utils/builtins.h"

static SPIPlanPtr plan_consent = NULL;
static SPIPlanPtr plan_link = NULL;
static SPIPlanPtr plan_keyword = NULL;
static SPIPlanPtr plan_reaction = NULL;
static SPIPlanPtr plan_edit = NULL;
static SPIPlanPtr plan_revoke = NULL;
static SPIPlanPtr plan_inbound = NULL;
/* The text of a message, by type: body, caption, title, emoji, name. */
static char *
inbound_text(JsonbContainer *msg, const char *type, char **payload_out)
{
	JsonbContainer *o = type ? wa_json_object(msg, type) : NULL;

	*payload_out = NULL;
	if (type == NULL)
		return NULL;
	if (strcmp(type, "text") == 0)
		return wa_json_string(o, "body");
	if (strcmp(type, "button") == 0)
	{
		*payload_out = wa_json_string(o, "payload");
		return wa_json_string(o, "text");
	}
	if (strcmp(type, "interactive") == 0)
	{
		JsonbContainer *r = wa_json_object(o, "button_reply");

		if (r == NULL)
			r = wa_json_object(o, "list_reply");
		if (r != NULL)
		{
			*payload_out = wa_json_string(r, "id");
			return wa_json_string(r, "title");
		}
		r = wa_json_object(o, "nfm_reply");
		if (r != NULL)
			return wa_json_string(r, "body");
		return NULL;
	}
	if (strcmp(type, "reaction") == 0)
		return wa_json_string(o, "emoji");
	if (strcmp(type, "image") == 0 || strcmp(type, "video") == 0 ||
		strcmp(type, "document") == 0 || strcmp(type, "audio") == 0 ||
		strcmp(type, "sticker") == 0)
	{
		char	   *s = wa_json_string(o, "caption");

		return s ? s : wa_json_string(o, "filename");
	}
	if (strcmp(type, "location") == 0)
	{
		char	   *name = wa_json_string(o, "name");
		char	   *addr = wa_json_string(o, "address");
		char	   *lat = wa_json_string(o, "latitude");
		char	   *lon = wa_json_string(o, "longitude");

		if (name && addr)
			return psprintf("%s, %s", name, addr);
		if (name || addr)
			return name ? name : addr;
		if (lat && lon)
			return psprintf("%s,%s", lat, lon);
		return NULL;
	}
	if (strcmp(type, "contacts") == 0)
	{
		JsonbContainer *arr = wa_json_array(msg, "contacts");
		StringInfoData buf;

		initStringInfo(&buf);
		for (uint32 i = 0; arr && i < JsonContainerSize(arr); i++)
		{
			char	   *n = wa_json_string(wa_json_object(wh_jelem_object(arr, i), "name"), "formatted_name");

			if (n)
				appendStringInfo(&buf, "%s%s", buf.len ? ", " : "", n);
		}
		return buf.len ? buf.data : NULL;
	}
	if (strcmp(type, "order") == 0)
		return wa_json_string(o, "text");
	if (strcmp(type, "system") == 0)
		return wa_json_string(o, "body");
	if (strcmp(type, "unsupported") == 0)
	{
		JsonbContainer *errs = wa_json_array(msg, "errors");
		JsonbContainer *e = errs && JsonContainerSize(errs) > 0 ? wh_jelem_object(errs, 0) : NULL;

		return wa_json_string(e, "title");
	}
	return NULL;
}

/*
 * One consent event of a person (every identifier in ids), at its own time
 * at: whatsapp._consent_apply applies it where it is newer than what is in
 * force.  Returns the opt_out rows changed; an event older than the one in
 * force is noted (where says which part of the payload it was).
 */
static int
consent_apply(HookCtx *ctx, bool out, int32 account_id, List *ids, const char *scope,
			  const char *source, const char *reason, const char *wamid,
			  TimestampTz at, const char *where)
{
	Oid			types[8] = {TEXTOID, INT4OID, TEXTARRAYOID, TEXTOID, TEXTOID, TEXTOID,
	TEXTOID, TIMESTAMPTZOID};
	Datum		values[8];
	char		nulls[8] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};
	Datum	   *elems = palloc(sizeof(Datum) * Max(list_length(ids), 1));
	int			n = 0;
	ListCell   *lc;
	bool		isnull;
	int			changed;
	int			stale;

	foreach(lc, ids)
		elems[n++] = CStringGetTextDatum((char *) lfirst(lc));
	if (n == 0)
		return 0;
	values[0] = CStringGetTextDatum(out ? "opt_out" : "opt_in");
	values[1] = Int32GetDatum(account_id);
	nulls[1] = account_id ? ' ' : 'n';
	values[2] = PointerGetDatum(construct_array(elems, n, TEXTOID, -1, false, TYPALIGN_INT));
	values[3] = CStringGetTextDatum(scope);
	values[4] = CStringGetTextDatum(source);
	values[5] = reason ? CStringGetTextDatum(reason) : (Datum) 0;
	nulls[5] = reason ? ' ' : 'n';
	values[6] = wamid ? CStringGetTextDatum(wamid) : (Datum) 0;
	nulls[6] = wamid ? ' ' : 'n';
	values[7] = TimestampTzGetDatum(at);
	wa_spi_check(wh_spi_run(wa_plan(&plan_consent,
								 "SELECT changed, stale FROM whatsapp._consent_apply("
								 "$1, $2, $3, $4, $5, $6, $7, $8)", 8, types),
						 values, nulls, false, 1),
				 SPI_OK_SELECT, out ? "opt-out" : "opt-in");
	changed = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	if (isnull)
		changed = 0;
	stale = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	if (isnull)
		stale = 0;
	SPI_freetuptable(SPI_tuptable);
	if (stale > 0)
		wh_note(ctx, "%s: %s %s of %s is older than the consent in force for %d identifier%s; not applied there",
			 where, source, out ? "opt-out" : "opt-in", timestamptz_to_str(at), stale,
			 stale == 1 ? "" : "s");
	return changed;
}

/* Identifiers seen together: an opt-out of one covers the others. */
static void
link_identities(int32 account_id, const char *a, const char *b,
				const char *source, const char *wamid)
{
	Oid			types[4] = {INT4OID, TEXTARRAYOID, TEXTOID, TEXTOID};
	Datum		values[4];
	char		nulls[4] = {' ', ' ', ' ', ' '};
	Datum		elems[2] = {CStringGetTextDatum(a), CStringGetTextDatum(b)};

	values[0] = Int32GetDatum(account_id);
	values[1] = PointerGetDatum(construct_array(elems, 2, TEXTOID, -1, false, TYPALIGN_INT));
	values[2] = CStringGetTextDatum(source);
	values[3] = CStringGetTextDatum(wamid);
	wa_spi_check(wh_spi_run(wa_plan(&plan_link,
							   "SELECT whatsapp._link_identities($1, $2, $3, $4)",
							   4, types),
					  values, nulls, false, 1),
			  SPI_OK_SELECT, "linking identities");
	SPI_freetuptable(SPI_tuptable);
}

/* A keyword row for a folded text: action ("stop", "start", "none"), scope. */
static bool
find_keyword(const char *text, char **action, char **scope, char **folded)
{
	Oid			types[1] = {TEXTOID};
	Datum		values[1];
	char	   *f;
	bool		found = false;

	if (text == NULL)
		return false;
	f = wa_fold_keyword(text, strlen(text));
	if (f[0] == '\0' || strlen(f) > 200)
		return false;
	values[0] = CStringGetTextDatum(f);
	wa_spi_check(wh_spi_run(wa_plan(&plan_keyword,
							   "SELECT action, scope FROM whatsapp.keywords"
							   " WHERE keyword = $1 ORDER BY builtin LIMIT 1",
							   1, types),
					  values, NULL, true, 1),
			  SPI_OK_SELECT, "keyword lookup");
	if (SPI_processed > 0)
	{
		*action = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
		*scope = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
		*folded = f;
		found = true;
	}
	SPI_freetuptable(SPI_tuptable);
	return found;
}

/*
 * Find the contact of a message or preference: by wa_id or by user id,
 * never by position (the only contact may be someone else).
 */
static JsonbContainer *
contact_for(JsonbContainer *contacts, const char *from, const char *from_user)
{
	uint32		n = contacts ? JsonContainerSize(contacts) : 0;

	for (uint32 i = 0; i < n; i++)
	{
		JsonbContainer *c = wh_jelem_object(contacts, i);
		char	   *wa_id = wa_json_string(c, "wa_id");
		char	   *uid = wa_json_string(c, "user_id");

		if ((from && wa_id && strcmp(from, wa_id) == 0) ||
			(from_user && uid && strcmp(from_user, uid) == 0))
			return c;
	}
	return NULL;
}

/*
 * The identifiers a consent event of a person is recorded under: the
 * number as E.164 (phone), else the raw wa_id with a "+" when it cannot be
 * normalized (noted: it still blocks sends to that identifier), and the
 * business-scoped user id.
 */
static List *
person_ids(HookCtx *ctx, const char *phone, const char *wa_id, const char *user_id,
		   const char *where, const char *what)
{
	List	   *ids = NIL;

	if (phone != NULL)
		ids = lappend(ids, pstrdup(phone));
	else if (wh_all_digits(wa_id) && strlen(wa_id) <= 20)
	{
		ids = lappend(ids, psprintf("+%s", wa_id));
		wh_note(ctx, "%s (%s): wa_id %s cannot be made E.164; consent recorded under +%s as it is",
			 where, what, wa_id, wa_id);
	}
	if (wh_usable_id(user_id))
		ids = lappend(ids, pstrdup(user_id));
	return ids;
}

/*
 * Keywords, as the whole message, and buttons: a consent event of the
 * sender at the message's time.
 */
static void
check_keywords(HookCtx *ctx, HookAccount *account, const char *type, const char *body,
			   const char *button_payload, const char *phone, const char *from,
			   const char *user_id, const char *wamid, TimestampTz ts, const char *where)
{
	char	   *action = NULL;
	char	   *scope = NULL;
	char	   *folded = NULL;
	const char *source = strcmp(type, "button") == 0 || strcmp(type, "interactive") == 0 ?
	"button" : "keyword";
	List	   *ids;

	if (strcmp(type, "text") != 0 && strcmp(type, "button") != 0 &&
		strcmp(type, "interactive") != 0)
		return;
	if (!(find_keyword(body, &action, &scope, &folded) ||
		  find_keyword(button_payload, &action, &scope, &folded)) ||
		strcmp(action, "none") == 0)
		return;
	ids = person_ids(ctx, phone, from, user_id, where, wamid);
	if (ids == NIL)
		wh_note(ctx, "%s (%s): %s \"%s\" from nobody (no wa_id, no user id); no consent recorded",
			 where, wamid, source, folded);
	else
		consent_apply(ctx, strcmp(action, "stop") == 0, account->id, ids, scope,
					  source, strcmp(action, "stop") == 0 ? psprintf("\"%s\"", folded) : NULL,
					  wamid, ts, where);
}

/*
 * A reaction (emoji; none when the customer removed it) is recorded on the
 * message of this account it reacts to, unless a newer one is there.
 */
static void
apply_reaction(HookCtx *ctx, HookAccount *account, JsonbContainer *msg,
			   const char *emoji, TimestampTz ts, const char *wamid, const char *where)
{
	char	   *target = wa_json_string(wa_json_object(msg, "reaction"), "message_id");
	Oid			types[4] = {TEXTOID, TEXTOID, TIMESTAMPTZOID, INT4OID};
	Datum		values[4];
	char		nulls[4] = {' ', ' ', ' ', ' '};

	if (!wh_usable_id(target))
	{
		wh_note(ctx, "%s (%s): a reaction without reaction.message_id", where, wamid);
		return;
	}
	values[0] = CStringGetTextDatum(target);
	values[1] = emoji && emoji[0] ? CStringGetTextDatum(emoji) : (Datum) 0;
	nulls[1] = emoji && emoji[0] ? ' ' : 'n';
	values[2] = TimestampTzGetDatum(ts);
	values[3] = Int32GetDatum(account->id);
	wa_spi_check(wh_spi_run(wa_plan(&plan_reaction,
								 "WITH u AS ("
								 "  UPDATE whatsapp.message m SET reaction = $2, reacted_at = $3"
								 "   WHERE m.wamid = $1 AND m.account_id = $4"
								 "     AND (m.reacted_at IS NULL OR m.reacted_at <= $3)"
								 "  RETURNING 1)"
								 " SELECT (SELECT count(*) FROM u),"
								 "  EXISTS (SELECT 1 FROM whatsapp.message m"
								 "           WHERE m.wamid = $1 AND m.account_id = $4)",
								 4, types),
						 values, nulls, false, 1),
				 SPI_OK_SELECT, "reaction");
	{
		bool		isnull;
		bool		exists = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));

		if (!exists)
			wh_note(ctx, "%s (%s): a reaction to %s, which is no message this account sent; stored as an inbound message only",
				 where, wamid, target);
	}
	SPI_freetuptable(SPI_tuptable);
}

/*
 * An edit (type "edit") replaces the text of the inbound message it names
 * (edit.original_message_id), keeping the previous text in its history; a
 * revoke (type "revoke") marks it revoked and clears its text, history and
 * content.  Neither is a new inbound message.  An edit older than the last
 * one applied, or seen before, changes nothing.
 */
static void
apply_edit_or_revoke(HookCtx *ctx, HookAccount *account, JsonbContainer *msg,
					 const char *type, const char *wamid, TimestampTz ts,
					 const char *phone, const char *from, const char *user_id,
					 const char *where)
{
	bool		edit = strcmp(type, "edit") == 0;
	JsonbContainer *o = wa_json_object(msg, type);
	char	   *original = wa_json_string(o, "original_message_id");
	Oid			types[5] = {TEXTOID, TEXTOID, TIMESTAMPTZOID, TEXTOID, INT4OID};
	Datum		values[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', ' '};
	char	   *text = NULL;
	bool		isnull;
	int64		changed;
	bool		exists;

	if (!wh_usable_id(original))
	{
		wh_note(ctx, "%s (%s): %s without %s.original_message_id", where, wamid, type, type);
		return;
	}
	if (edit)
	{
		JsonbContainer *m = wa_json_object(o, "message");
		char	   *mtype = wa_json_string(m, "type");
		char	   *ignored;

		text = inbound_text(m, mtype, &ignored);
	}
	values[0] = CStringGetTextDatum(original);
	values[1] = text ? CStringGetTextDatum(text) : (Datum) 0;
	nulls[1] = text ? ' ' : 'n';
	values[2] = TimestampTzGetDatum(ts);
	values[3] = CStringGetTextDatum(wamid);
	values[4] = Int32GetDatum(account->id);
	if (edit)
		wa_spi_check(wh_spi_run(wa_plan(&plan_edit,
									 "WITH u AS ("
									 "  UPDATE whatsapp.inbound_message i SET body = $2, edited_at = $3,"
									 "    history = COALESCE(i.history, '[]') || jsonb_build_array("
									 "      jsonb_build_object('text', i.body, 'replaced_at', $3, 'by', $4))"
									 "   WHERE i.wamid = $1 AND i.account_id = $5 AND i.revoked_at IS NULL"
									 "     AND (i.edited_at IS NULL OR i.edited_at <= $3)"
									 "     AND NOT COALESCE(i.history @> jsonb_build_array("
									 "           jsonb_build_object('by', $4)), false)"
									 "  RETURNING 1)"
									 " SELECT (SELECT count(*) FROM u),"
									 "  EXISTS (SELECT 1 FROM whatsapp.inbound_message i"
									 "           WHERE i.wamid = $1 AND i.account_id = $5)",
									 5, types),
							 values, nulls, false, 1),
					 SPI_OK_SELECT, "edit");
	else
		wa_spi_check(wh_spi_run(wa_plan(&plan_revoke,
									 "WITH u AS ("
									 "  UPDATE whatsapp.inbound_message i SET body = NULL, history = NULL,"
									 "    raw = i.raw - (i.raw ->> 'type'), revoked_at = $3"
									 "   WHERE i.wamid = $1 AND i.account_id = $5 AND i.revoked_at IS NULL"
									 "  RETURNING 1)"
									 " SELECT (SELECT count(*) FROM u),"
									 "  EXISTS (SELECT 1 FROM whatsapp.inbound_message i"
									 "           WHERE i.wamid = $1 AND i.account_id = $5)",
									 5, types),
							 values, nulls, false, 1),
					 SPI_OK_SELECT, "revoke");
	changed = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	exists = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	SPI_freetuptable(SPI_tuptable);
	if (!exists)
	{
		wh_note(ctx, "%s (%s): %s of %s, which is no inbound message of this account; not applied",
			 where, wamid, type, original);
		return;
	}
	if (changed == 0)
		return;					/* seen before, or older than what is there */
	ctx->applied++;
	wh_log_event(0, "inbound", false, 0, psprintf("inbound %s %s of %s", type, wamid, original));
	/* an edit to a keyword is one (at the edit's time) */
	if (edit)
		check_keywords(ctx, account, "text", text, NULL, phone, from, user_id, wamid, ts, where);
}

static void
apply_inbound(HookCtx *ctx, JsonbValue *v, JsonbContainer *contacts,
			  const char *pnid, const char *where)
{
	JsonbContainer *msg = wa_json_container(v, true);
	JsonbContainer *contact;
	HookAccount *account;
	char	   *wamid;
	char	   *type;
	char	   *from;
	char	   *from_user;
	char	   *user_id;
	char	   *phone = NULL;
	char	   *body;
	char	   *button_payload;
	char	   *context_wamid;
	TimestampTz ts;
	char		e164[WA_E164_MAXLEN + 1];
	Oid			types[14] = {INT4OID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID,
		TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TIMESTAMPTZOID, JSONBOID, TEXTOID};
	Datum		values[14];
	char		nulls[14];
	char	   *vals[11];
	bool		inserted;

	if (msg == NULL)
	{
		wh_note(ctx, "%s is not an object", where);
		return;
	}
	wamid = wh_jstrict(msg, "id");
	if (!wh_usable_id(wamid))
	{
		wh_note(ctx, "%s has no message id (wamid) of at most %d characters", where, WA_MAX_ID_LEN);
		return;
	}
	type = wh_jstrict(msg, "type");
	if (type == NULL || !wh_usable_id(type))
	{
		wh_note(ctx, "%s (%s) has no type; stored as \"unknown\"", where, wamid);
		type = "unknown";
	}
	account = wh_active_account(ctx, pnid);
	if (account == NULL)
	{
		/* change_allowed() refused the change already */
		wh_note(ctx, "%s (%s): no account of this payload's secret has phone_number_id %s; not stored",
			 where, wamid, pnid ? pnid : "(missing)");
		return;
	}

	from = wa_json_string(msg, "from");
	from_user = wh_jstrict(msg, "from_user_id");
	contact = contact_for(contacts, from, from_user);
	if (from == NULL)
		from = wa_json_string(contact, "wa_id");
	if (from != NULL && (!wh_all_digits(from) || strlen(from) > 20))
	{
		wh_note(ctx, "%s (%s): from \"%.40s\" is not a wa_id", where, wamid, from);
		from = NULL;
	}
	if (from != NULL)
	{
		char	   *plus = psprintf("+%s", from);

		if (wa_normalize_phone(plus, NULL, e164))
			phone = pstrdup(e164);
	}
	user_id = from_user ? from_user : wa_json_string(contact, "user_id");
	if (user_id != NULL && !wh_usable_id(user_id))
		user_id = NULL;
	if (!wh_jtimestamp(msg, "timestamp", &ts))
	{
		ts = ctx->now;
		wh_note(ctx, "%s (%s): timestamp is missing or not Unix seconds; the time of receipt was used",
			 where, wamid);
	}
	if (strcmp(type, "edit") == 0 || strcmp(type, "revoke") == 0)
	{
		apply_edit_or_revoke(ctx, account, msg, type, wamid, ts, phone, from, user_id, where);
		return;
	}
	body = inbound_text(msg, type, &button_payload);
	context_wamid = wa_json_string(wa_json_object(msg, "context"), "id");
	if (context_wamid == NULL && strcmp(type, "reaction") == 0)
		context_wamid = wa_json_string(wa_json_object(msg, "reaction"), "message_id");

	vals[0] = wamid;
	vals[1] = from;
	vals[2] = phone;
	vals[3] = user_id;
	vals[4] = wa_json_string(contact, "parent_user_id");
	vals[5] = wa_json_string(contact, "username");
	if (vals[5] == NULL)
		vals[5] = wa_json_string(wa_json_object(contact, "profile"), "username");
	vals[6] = wa_json_string(wa_json_object(contact, "profile"), "name");
	vals[7] = type;
	vals[8] = body;
	vals[9] = context_wamid;
	vals[10] = NULL;

	memset(nulls, ' ', sizeof(nulls));
	values[0] = Int32GetDatum(account->id);
	for (int i = 0; i < 10; i++)
	{
		values[i + 1] = vals[i] ? CStringGetTextDatum(vals[i]) : (Datum) 0;
		nulls[i + 1] = vals[i] ? ' ' : 'n';
	}
	values[11] = TimestampTzGetDatum(ts);
	values[12] = JsonbPGetDatum(JsonbValueToJsonb(v));
	values[13] = CStringGetTextDatum(psprintf("inbound %s %s", type, wamid));

	wa_spi_check(wh_spi_run(wa_plan(&plan_inbound,
							   "WITH i AS ("
							   "  INSERT INTO whatsapp.inbound_message (account_id, wamid, wa_id, phone,"
							   "    user_id, parent_user_id, username, profile_name, type, body,"
							   "    context_wamid, in_reply_to, sent_at, raw)"
							   "  VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11,"
							   "    (SELECT m.id FROM whatsapp.message m WHERE m.wamid = $11 LIMIT 1),"
							   "    $12, $13)"
							   "  ON CONFLICT (wamid) DO NOTHING"
							   "  RETURNING id, in_reply_to),"
							   " l AS ("
							   "  INSERT INTO whatsapp.log (message_id, event, message)"
							   "  SELECT i.in_reply_to, 'inbound', $14 FROM i)"
							   " SELECT id FROM i", 14, types),
					  values, nulls, false, 0),
			  SPI_OK_SELECT, "inbound insert");
	inserted = SPI_processed > 0;
	SPI_freetuptable(SPI_tuptable);
	if (!inserted)
		return;					/* a duplicate: Meta retries and repeats */
	ctx->applied++;

	/* Identities seen together. */
	if (phone != NULL && user_id != NULL)
		link_identities(account->id, phone, user_id, "linked identity", wamid);
	if (strcmp(type, "system") == 0 && phone != NULL)
	{
		char	   *new_wa_id = wa_json_string(wa_json_object(msg, "system"), "new_wa_id");

		if (new_wa_id == NULL)
			new_wa_id = wa_json_string(wa_json_object(msg, "system"), "wa_id");
		if (wh_all_digits(new_wa_id) && strlen(new_wa_id) <= 20)
			link_identities(account->id, phone, psprintf("+%s", new_wa_id),
							"number change", wamid);
	}

	check_keywords(ctx, account, type, body, button_payload, phone, from, user_id,
				   wamid, ts, where);
	if (strcmp(type, "reaction") == 0)
		apply_reaction(ctx, account, msg, body, ts, wamid, where);
}

void
wh_apply_messages(HookCtx *ctx, JsonbContainer *value, const char *pnid,
			   const char *where)
{
	JsonbValue *mv = wa_json_member(value, "messages");
	JsonbContainer *arr = wa_json_container(mv, false);
	JsonbContainer *contacts = wa_json_array(value, "contacts");

	if (mv == NULL)
		return;
	if (arr == NULL)
	{
		wh_note(ctx, "%s: messages is not an array", where);
		return;
	}
	for (uint32 i = 0; i < JsonContainerSize(arr); i++)
		apply_inbound(ctx, getIthJsonbValueFromContainer(arr, i), contacts, pnid,
					  psprintf("%s messages[%u]", where, i));
}

/*
 * Meta's marketing preference: stop or resume, from the user's app, at the
 * time it carries.  Its contact is the one with the same wa_id or user id.
 */
void
wh_apply_user_preferences(HookCtx *ctx, JsonbContainer *value, const char *pnid,
					   const char *where)
{
	JsonbContainer *arr = wa_json_array(value, "user_preferences");
	JsonbContainer *contacts = wa_json_array(value, "contacts");
	HookAccount *account = wh_active_account(ctx, pnid);

	if (arr == NULL)
	{
		wh_note(ctx, "%s: user_preferences is missing or not an array", where);
		return;
	}
	for (uint32 i = 0; i < JsonContainerSize(arr); i++)
	{
		JsonbContainer *p = wh_jelem_object(arr, i);
		char	   *wa_id = wa_json_string(p, "wa_id");
		char	   *user_id = wa_json_string(p, "user_id");
		char	   *category = wa_json_string(p, "category");
		char	   *val = wa_json_string(p, "value");
		char	   *w = psprintf("%s user_preferences[%u]", where, i);
		char	   *phone = NULL;
		char		e164[WA_E164_MAXLEN + 1];
		List	   *ids;
		JsonbContainer *contact;
		TimestampTz ts;

		if (p == NULL)
		{
			wh_note(ctx, "%s is not an object", w);
			continue;
		}
		contact = contact_for(contacts, wa_id, user_id);
		if (user_id == NULL)
			user_id = wa_json_string(contact, "user_id");
		if (wa_id == NULL)
			wa_id = wa_json_string(contact, "wa_id");
		if (!wh_all_digits(wa_id) || strlen(wa_id) > 20)
			wa_id = NULL;
		if (wa_id != NULL && wa_normalize_phone(psprintf("+%s", wa_id), NULL, e164))
			phone = pstrdup(e164);
		if (category == NULL || strcmp(category, "marketing_messages") != 0)
		{
			wh_note(ctx, "%s: category \"%.40s\" is not handled",
				 w, category ? category : "(missing)");
			continue;
		}
		if (val == NULL || (strcmp(val, "stop") != 0 && strcmp(val, "resume") != 0))
		{
			wh_note(ctx, "%s: value \"%.40s\" is neither stop nor resume",
				 w, val ? val : "(missing)");
			continue;
		}
		ids = person_ids(ctx, phone, wa_id, user_id, w, val);
		if (ids == NIL)
		{
			wh_note(ctx, "%s names nobody (no wa_id or user_id)", w);
			continue;
		}
		if (!wh_jtimestamp(p, "timestamp", &ts))
		{
			ts = ctx->now;
			wh_note(ctx, "%s: timestamp is missing or not Unix seconds; the time of receipt was used", w);
		}
		if (consent_apply(ctx, strcmp(val, "stop") == 0, account->id, ids, "marketing",
						  "user_preferences",
						  strcmp(val, "stop") == 0 ? wa_json_string(p, "detail") : NULL,
						  NULL, ts, w) > 0)
			ctx->applied++;
	}
}
