/*-------------------------------------------------------------------------
 *
 * webhook_account.c
 *	  Meta's account and template events: account_update (a ban, a
 *	  restriction or an offboarding pauses the WABA's accounts),
 *	  phone_number_quality_update, and the template status, category and
 *	  quality updates.  Each applies to the accounts of the entry's WABA
 *	  that share the secret that verified the payload, and to no other.
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

static SPIPlanPtr plan_tpl_update = NULL;
static SPIPlanPtr plan_account_event = NULL;
static SPIPlanPtr plan_quality = NULL;
static SPIPlanPtr plan_display = NULL;
/*
 * The accounts a change of a WABA-level field (templates, account events)
 * applies to: the active accounts whose waba_id is the entry's id and that
 * share the verifying secret.  NULL, with a note, when there are none.
 * *every is set when they are all the active accounts.
 */
static List *
waba_accounts(HookCtx *ctx, const char *waba, const char *field,
			  const char *where, bool *every)
{
	List	   *list = NIL;
	HookAccount *other = NULL;
	int			active = 0;

	for (int i = 0; i < ctx->naccounts; i++)
	{
		HookAccount *a = &ctx->accounts[i];

		if (a->dropped)
			continue;
		active++;
		if (waba == NULL || a->waba_id == NULL || strcmp(a->waba_id, waba) != 0)
			continue;
		if (wh_signed_for(ctx, i))
			list = lappend(list, a);
		else
			other = a;
	}
	*every = list != NIL && list_length(list) == active;
	if (list != NIL)
		return list;
	if (waba == NULL)
		wh_note(ctx, "%s (field %s): the entry has no id (WABA); refused", where, field);
	else if (other != NULL)
		wh_note(ctx, "%s (field %s): WABA %s is account \"%s\"'s, whose app secret did not sign this payload; refused",
			 where, field, waba, other->name);
	else
		wh_note(ctx, "%s (field %s): no active account has WABA id %.64s; refused",
			 where, field, waba);
	return NIL;
}

/* text[] of the names of a list of accounts */
static Datum
account_names(List *accounts)
{
	Datum	   *elems = palloc(sizeof(Datum) * Max(list_length(accounts), 1));
	int			n = 0;
	ListCell   *lc;

	foreach(lc, accounts)
		elems[n++] = CStringGetTextDatum(((HookAccount *) lfirst(lc))->name);
	return PointerGetDatum(construct_array(elems, n, TEXTOID, -1, false, TYPALIGN_INT));
}

/*
 * message_template_status_update, template_category_update and
 * message_template_quality_update: applied to the templates of the
 * accounts of the entry's WABA only (see whatsapp._template_update for the
 * rows listed for every account).  column: status, category or quality.
 */
void
wh_apply_template_update(HookCtx *ctx, JsonbContainer *value, const char *waba,
					  const char *field, const char *column, const char *where)
{
	char	   *name = wa_json_string(value, "message_template_name");
	char	   *language = wa_json_string(value, "message_template_language");
	char	   *newval;
	Oid			types[6] = {TEXTARRAYOID, BOOLOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID};
	Datum		values[6];
	char		nulls[6] = {' ', ' ', ' ', ' ', ' ', ' '};
	List	   *accounts;
	bool		every;
	bool		isnull;
	int			n;

	if (strcmp(column, "category") == 0)
	{
		newval = wa_json_string(value, "new_category");
		if (newval != NULL)
			for (char *c = newval; *c; c++)
				*c = pg_toupper((unsigned char) *c);
		if (newval == NULL || (strcmp(newval, "MARKETING") != 0 &&
							   strcmp(newval, "UTILITY") != 0 &&
							   strcmp(newval, "AUTHENTICATION") != 0))
		{
			wh_note(ctx, "%s: new_category \"%.40s\" is not MARKETING, UTILITY or AUTHENTICATION",
				 where, newval ? newval : "(missing)");
			return;
		}
	}
	else
	{
		bool		quality = strcmp(column, "quality") == 0;

		newval = wa_json_string(value, quality ? "new_quality_score" : "event");
		if (newval == NULL || strlen(newval) > 64)
		{
			wh_note(ctx, "%s: template %s update without %s", where, column,
				 quality ? "new_quality_score" : "an event");
			return;
		}
	}
	if (name == NULL || strlen(name) > 512)
	{
		wh_note(ctx, "%s: template update without message_template_name", where);
		return;
	}
	accounts = waba_accounts(ctx, waba, field, where, &every);
	if (accounts == NIL)
		return;
	if (language != NULL)
		for (char *c = language; *c; c++)
			if (*c == '-')
				*c = '_';

	values[0] = account_names(accounts);
	values[1] = BoolGetDatum(every);
	values[2] = CStringGetTextDatum(name);
	values[3] = language ? CStringGetTextDatum(language) : (Datum) 0;
	nulls[3] = language ? ' ' : 'n';
	values[4] = CStringGetTextDatum(column);
	values[5] = CStringGetTextDatum(newval);
	wa_spi_check(wh_spi_run(wa_plan(&plan_tpl_update,
								 "SELECT whatsapp._template_update($1, $2, $3, $4, $5, $6)",
								 6, types),
						 values, nulls, false, 1),
				 SPI_OK_SELECT, "template update");
	n = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	SPI_freetuptable(SPI_tuptable);
	wh_log_event(0, "webhook", false, 0,
			  psprintf("template %s%s%s of WABA %s: %s %s%s", name,
					   language ? " " : "", language ? language : "", waba,
					   column, newval,
					   n > 0 ? "" : " (no such row in whatsapp.templates)"));
	if (n > 0)
		ctx->applied++;
}

/* Meta's Unix seconds as text, for a reason: "2026-10-30 13:38:04+00". */
static const char *
unix_text(JsonbContainer *c, const char *key)
{
	TimestampTz ts;

	if (!wh_jtimestamp(c, key, &ts))
		return NULL;
	return timestamptz_to_str(ts);
}

/*
 * account_update: a ban (DISABLED_UPDATE with DISABLE), a restriction of
 * messaging (ACCOUNT_RESTRICTION) or an offboarding (ACCOUNT_OFFBOARDED,
 * ACCOUNT_DELETED) pauses the accounts of the WABA, with the reason;
 * REINSTATE and ACCOUNT_RECONNECTED resume accounts Meta paused.  Every
 * event is recorded as the accounts' meta_status.
 */
void
wh_apply_account_update(HookCtx *ctx, JsonbContainer *value, const char *waba,
					 const char *field, const char *where)
{
	char	   *event = wa_json_string(value, "event");
	char	   *status;
	char	   *pause = NULL;
	bool		resume = false;
	List	   *accounts;
	bool		every;
	Oid			types[5] = {TEXTARRAYOID, TEXTOID, TIMESTAMPTZOID, TEXTOID, BOOLOID};
	Datum		values[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', ' '};

	if (event == NULL || strlen(event) > 64)
	{
		wh_note(ctx, "%s: account_update without an event", where);
		return;
	}
	accounts = waba_accounts(ctx, waba, field, where, &every);
	if (accounts == NIL)
		return;
	status = event;
	if (strcmp(event, "DISABLED_UPDATE") == 0)
	{
		JsonbContainer *ban = wa_json_object(value, "ban_info");
		char	   *state = wa_json_string(ban, "waba_ban_state");
		char	   *date = wa_json_string(ban, "waba_ban_date");

		status = psprintf("%s: %s%s%s", event, state ? state : "(no waba_ban_state)",
						  date ? " " : "", date ? date : "");
		if (state != NULL && strcmp(state, "DISABLE") == 0)
			pause = psprintf("Meta disabled (banned) WABA %s%s%s (account_update DISABLED_UPDATE); it resumes on Meta's REINSTATE or whatsapp.wa_account_set()",
							 waba, date ? " on " : "", date ? date : "");
		else if (state != NULL && strcmp(state, "REINSTATE") == 0)
			resume = true;
	}
	else if (strcmp(event, "ACCOUNT_RESTRICTION") == 0)
	{
		JsonbContainer *arr = wa_json_array(value, "restriction_info");
		StringInfoData types_buf;
		bool		messaging = false;

		initStringInfo(&types_buf);
		for (uint32 i = 0; arr && i < JsonContainerSize(arr); i++)
		{
			JsonbContainer *r = wh_jelem_object(arr, i);
			char	   *type = wa_json_string(r, "restriction_type");
			const char *until = unix_text(r, "expiration");

			if (type == NULL)
				continue;
			appendStringInfo(&types_buf, "%s%s%s%s", types_buf.len ? ", " : "", type,
							 until ? " until " : "", until ? until : "");
			if (strstr(type, "MESSAGING") != NULL)
				messaging = true;
		}
		status = psprintf("%s: %s", event, types_buf.len ? types_buf.data : "(no restriction_info)");
		if (messaging)
			pause = psprintf("Meta restricted WABA %s: %s (account_update ACCOUNT_RESTRICTION); resume with whatsapp.wa_account_set() once it is lifted",
							 waba, types_buf.data);
	}
	else if (strcmp(event, "ACCOUNT_OFFBOARDED") == 0 || strcmp(event, "ACCOUNT_DELETED") == 0)
		pause = psprintf("Meta reported WABA %s as %s (account_update); it resumes on ACCOUNT_RECONNECTED or whatsapp.wa_account_set()",
						 waba, strcmp(event, "ACCOUNT_DELETED") == 0 ? "deleted" : "offboarded");
	else if (strcmp(event, "ACCOUNT_RECONNECTED") == 0)
		resume = true;
	else if (strcmp(event, "ACCOUNT_VIOLATION") == 0)
	{
		char	   *type = wa_json_string(wa_json_object(value, "violation_info"), "violation_type");

		status = psprintf("%s: %s", event, type ? type : "(no violation_type)");
	}

	values[0] = account_names(accounts);
	values[1] = CStringGetTextDatum(status);
	values[2] = TimestampTzGetDatum(ctx->entry_time);
	values[3] = pause ? CStringGetTextDatum(pause) : (Datum) 0;
	nulls[3] = pause ? ' ' : 'n';
	values[4] = BoolGetDatum(resume);
	wa_spi_check(wh_spi_run(wa_plan(&plan_account_event,
								 "UPDATE whatsapp.account a SET meta_status = $2, meta_status_at = $3,"
								 "  paused_kind = CASE WHEN $4 IS NOT NULL THEN 'meta'"
								 "    WHEN $5 AND a.paused_kind = 'meta' THEN NULL ELSE a.paused_kind END,"
								 "  paused_reason = CASE WHEN $4 IS NOT NULL THEN $4"
								 "    WHEN $5 AND a.paused_kind = 'meta' THEN NULL ELSE a.paused_reason END,"
								 "  paused_at = CASE WHEN $4 IS NOT NULL THEN pg_catalog.now()"
								 "    WHEN $5 AND a.paused_kind = 'meta' THEN NULL ELSE a.paused_at END"
								 " WHERE a.name = ANY ($1) AND a.dropped_at IS NULL", 5, types),
						 values, nulls, false, 0),
				 SPI_OK_UPDATE, "account event");
	if (pause != NULL || resume)
		wa_accounts_changed_at_commit();	/* the worker reloads its accounts */
	wh_log_event(0, "webhook", false, 0,
			  psprintf("account_update of WABA %s: %s%s", waba, status,
					   pause ? "; accounts paused" : resume ? "; accounts Meta paused resumed" : ""));
	ctx->applied++;
}

/* The digits of s, for comparing phone numbers written differently. */
static char *
digits_of(const char *s)
{
	StringInfoData buf;

	initStringInfo(&buf);
	for (; s && *s; s++)
		if (*s >= '0' && *s <= '9')
			appendStringInfoChar(&buf, *s);
	return buf.data;
}

/*
 * phone_number_quality_update: the event (FLAGGED, UNFLAGGED, DOWNGRADE,
 * UPGRADE, THROUGHPUT_UPGRADE, ...) and the messaging limit, recorded on
 * the account of the WABA whose display_phone_number it names (learned
 * from the metadata of messages webhooks), or on its only account when
 * that one's number is not known yet.
 */
void
wh_apply_quality_update(HookCtx *ctx, JsonbContainer *value, const char *waba,
					 const char *field, const char *where)
{
	char	   *display = wa_json_string(value, "display_phone_number");
	char	   *event = wa_json_string(value, "event");
	char	   *limit = wa_json_string(value, "max_daily_conversations_per_business");
	char	   *digits = digits_of(display);
	List	   *accounts;
	List	   *target = NIL;
	ListCell   *lc;
	bool		every;
	Oid			types[4] = {TEXTARRAYOID, TEXTOID, TEXTOID, TIMESTAMPTZOID};
	Datum		values[4];
	char		nulls[4] = {' ', ' ', ' ', ' '};

	if (limit == NULL)
		limit = wa_json_string(value, "current_limit");
	if (event == NULL || strlen(event) > 64)
	{
		wh_note(ctx, "%s: phone_number_quality_update without an event", where);
		return;
	}
	accounts = waba_accounts(ctx, waba, field, where, &every);
	if (accounts == NIL)
		return;
	foreach(lc, accounts)
	{
		HookAccount *a = (HookAccount *) lfirst(lc);

		if (digits[0] != '\0' && a->display != NULL && strcmp(digits_of(a->display), digits) == 0)
			target = lappend(target, a);
	}
	/* the WABA's only account, when its number is not known yet */
	if (target == NIL && list_length(accounts) == 1 &&
		((HookAccount *) linitial(accounts))->display == NULL)
		target = accounts;
	if (target == NIL)
	{
		wh_note(ctx, "%s: phone_number_quality_update for display number %.32s: no account of WABA %s is known by that number yet (a messages webhook shows it); not applied",
			 where, display ? display : "(missing)", waba);
		return;
	}
	values[0] = account_names(target);
	values[1] = CStringGetTextDatum(event);
	values[2] = limit ? CStringGetTextDatum(limit) : (Datum) 0;
	nulls[2] = limit ? ' ' : 'n';
	values[3] = TimestampTzGetDatum(ctx->entry_time);
	wa_spi_check(wh_spi_run(wa_plan(&plan_quality,
								 "UPDATE whatsapp.account a SET quality = $2,"
								 "  messaging_limit = COALESCE($3, a.messaging_limit), quality_at = $4"
								 " WHERE a.name = ANY ($1) AND a.dropped_at IS NULL", 4, types),
						 values, nulls, false, 0),
				 SPI_OK_UPDATE, "quality update");
	wh_log_event(0, "webhook", false, 0,
			  psprintf("phone_number_quality_update of %s (WABA %s): %s%s%s",
					   display ? display : "(no display number)", waba, event,
					   limit ? ", limit " : "", limit ? limit : ""));
	ctx->applied++;
}

/* Learn the display number of an account from a messages webhook. */
void
wh_learn_display(HookCtx *ctx, JsonbContainer *value, const char *pnid)
{
	char	   *display = wa_json_string(wa_json_object(value, "metadata"), "display_phone_number");
	HookAccount *a = wh_active_account(ctx, pnid);
	Oid			types[2] = {INT4OID, TEXTOID};
	Datum		values[2];

	if (a == NULL || display == NULL || strlen(display) > 32 ||
		(a->display != NULL && strcmp(a->display, display) == 0))
		return;
	values[0] = Int32GetDatum(a->id);
	values[1] = CStringGetTextDatum(display);
	wa_spi_check(wh_spi_run(wa_plan(&plan_display,
								 "UPDATE whatsapp.account SET display_phone_number = $2"
								 " WHERE id = $1 AND display_phone_number IS DISTINCT FROM $2",
								 2, types),
						 values, NULL, false, 0),
				 SPI_OK_UPDATE, "display number");
}
