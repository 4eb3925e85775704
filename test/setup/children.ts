import { afterAll } from 'vitest';
import { killTrackedChildren } from '../support/children.js';

afterAll(() => killTrackedChildren());
