import { afterAll } from 'vitest';
import { killTrackedChildren } from '../helpers/children.js';

afterAll(() => killTrackedChildren());
