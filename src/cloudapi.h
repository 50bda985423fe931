/*-------------------------------------------------------------------------
 *
 * cloudapi.h
 *	  What a Cloud API answer means for the message that was sent.
 *
 *-------------------------------------------------------------------------
 */
#ifndef WHATSAPP_CLOUDAPI_H
#define WHATSAPP_CLOUDAPI_H

#include "http.h"

typedef enum WaOutcomeKind
{
	WA_OUT_SENT,				/* HTTP 200: accepted */
	WA_OUT_RETRY,				/* back to queued after delay_s */
	WA_OUT_FAIL,				/* final failure */
	WA_OUT_PAUSE_ACCOUNT,		/* token rejected: requeue, pause account */
	WA_OUT_BACKOFF_ACCOUNT		/* throughput limit: requeue, account waits */
} WaOutcomeKind;

typedef struct WaOutcome
{
	WaOutcomeKind kind;
	bool		counts_attempt; /* false: the attempt is given back */
	bool		has_code;
	int			code;			/* Meta's error code */
	const char *failure_type;	/* for WA_OUT_FAIL */
	char	   *title;
	char	   *details;
	char	   *fbtrace_id;
	char	   *wamid;
	char	   *wa_id;
	double		delay_s;		/* for RETRY and BACKOFF_ACCOUNT */
	char	   *log_message;	/* one line for whatsapp.log, never a secret */
} WaOutcome;

extern void wa_classify(WaTransfer *t, int max_attempts, WaOutcome *out);

#endif							/* WHATSAPP_CLOUDAPI_H */
