/** One base error with an HTTP status, a stable problem type and a message a user can act on. */
export class AppError extends Error {
  constructor(
    readonly status: number,
    readonly type: string,
    readonly title: string,
    message: string,
    readonly extra: Record<string, unknown> = {},
  ) {
    super(message);
    this.name = new.target.name;
  }
}

export interface FieldError {
  field: string;
  rule: string;
}

export class ValidationFailed extends AppError {
  constructor(readonly errors: FieldError[]) {
    super(400, 'validation-failed', 'Validation failed', errors.map((e) => `${e.field}: ${e.rule}`).join('; '), { errors });
  }
}

export class NotFound extends AppError {
  constructor(what: string) {
    super(404, 'not-found', 'Not found', `${what} was not found`);
  }
}

export class Conflict extends AppError {
  constructor(message: string, extra: Record<string, unknown> = {}) {
    super(409, 'conflict', 'Conflict', message, extra);
  }
}

export class PreconditionFailed extends AppError {
  constructor(message: string, extra: Record<string, unknown> = {}) {
    super(412, 'precondition-failed', 'Precondition failed', message, extra);
  }
}

export class Unauthorized extends AppError {
  constructor(message = 'a valid bearer token is required') {
    super(401, 'unauthorized', 'Unauthorized', message);
  }
}

export class Forbidden extends AppError {
  constructor(message: string) {
    super(403, 'forbidden', 'Forbidden', message);
  }
}

export class TooManyRequests extends AppError {
  constructor(readonly retryAfterSeconds: number) {
    super(429, 'too-many-requests', 'Too many requests', `too many failed attempts; retry after ${retryAfterSeconds} s`);
  }
}

export class Unprocessable extends AppError {
  constructor(message: string, extra: Record<string, unknown> = {}) {
    super(422, 'unprocessable', 'Unprocessable entity', message, extra);
  }
}

export class ServiceUnavailable extends AppError {
  constructor(message: string) {
    super(503, 'unavailable', 'Service unavailable', message);
  }
}
